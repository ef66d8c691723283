package topology

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/arborid/arbor/internal/selector"
)

// validate runs the checks that concern more than one block: the shape of
// the tree, how TTLs nest across tiers, what must differ between servers on
// one host, and the warnings about risky but valid choices. They all run
// whatever errors parsing found, so that validate reports every problem at
// once; only a check that depends on an attribute with an error is skipped
// (see broken), so that one mistake is reported once.
func (p *parser) validate(f *File) {
	p.parsed = len(p.diags)
	p.checkRoots(f)
	p.checkCycles(f)
	for _, s := range f.Servers {
		p.checkServerInTree(f, s)
	}
	p.checkHosts(f)
	for _, s := range f.Servers {
		p.checkReplicas(s)
	}
	p.checkFederatesWith(f)
	deepest := -1
	for _, s := range f.Servers {
		deepest = max(deepest, f.Depth(s.Name))
	}
	for _, s := range f.Servers {
		p.warnServer(f, s)
		if !p.broken(s, "ca_ttl") {
			p.warnPropagation(f, s, deepest)
		}
		if !p.broken(s, "bundle_endpoint") {
			p.warnFederationLead(f, s)
		}
	}
}

// broken reports whether parsing found an error inside one of the named
// attributes or nested blocks (by block type) of s, or inside the defaults
// block's attribute of that name, which s may inherit. A check that depends
// on such an attribute is skipped: it would judge the default put in place
// of the value written, and the attribute's own error already says what to
// fix.
func (p *parser) broken(s *Server, names ...string) bool {
	within := func(rngs []hcl.Range) bool {
		for _, rng := range rngs {
			for _, d := range p.diags[:p.parsed] {
				if d.Severity == hcl.DiagError && d.Subject != nil && p.within(*d.Subject, rng) {
					return true
				}
			}
		}
		return false
	}
	for _, n := range names {
		if within(s.spans[n]) || (p.defs != nil && within(p.defs.spans[n])) {
			return true
		}
	}
	return false
}

// warnFederationLead warns when s serves a bundle endpoint whose
// refresh_hint is too long for the shortest rotation margin of the tree:
// the bundle holds every tier's JWT keys (and the root's next CA), each
// published a third of its ca_ttl before it is used, and a federated trust
// domain fetches again only after the hint. Half the margin is left for the
// federated side's own agents to sync (and SPIRE polls at a quarter of the
// hint).
func (p *parser) warnFederationLead(f *File, s *Server) {
	be := s.BundleEndpoint
	if be == nil || be.RefreshHint <= 0 {
		return
	}
	var shortest *Server
	for _, t := range f.Servers {
		if t.CATTL > 0 && !p.broken(t, "ca_ttl") && (shortest == nil || t.CATTL < shortest.CATTL) {
			shortest = t
		}
	}
	if shortest == nil {
		return
	}
	margin := shortest.CATTL / 3
	if be.RefreshHint <= margin/2 {
		return
	}
	rng := be.Range
	if be.refreshHintRange != nil {
		rng = *be.refreshHintRange
	}
	what := "JWT key"
	if shortest.Parent == "" && shortest.Upstream == nil {
		what = "JWT key and root CA"
	}
	p.warnf(rng, "Federated trust domains may miss a new key",
		"Server %q's bundle endpoint tells federated trust domains to fetch again every %s (refresh_hint), but server %q publishes its next %s only %s before signing with it (a third of its ca_ttl %s). Until a federated trust domain fetches again, its workloads reject what the new key signs. Lower refresh_hint to at most %s, or raise %q's ca_ttl to at least %s.",
		s.Name, formatDuration(be.RefreshHint), shortest.Name, what, formatDuration(margin), formatDuration(shortest.CATTL),
		formatDuration(margin/2), shortest.Name, formatDuration(6*be.RefreshHint))
}

// ServerBundleSyncInterval is how often a downstream server pulls its
// parent's bundle: the server's ParentBundleSyncInterval default, which the
// topology file does not change.
const ServerBundleSyncInterval = 10 * time.Second

// PropagationBound is the longest a new authority takes to reach every
// workload of a tree whose deepest server is depth tiers below the root: a
// new root CA travels down one tier per bundle sync (a JWT key is pushed up
// to the root synchronously when prepared, then travels down the same way),
// and the agents of the deepest tier pick it up at their next sync. See
// docs/nesting.md.
func PropagationBound(depth int, agentSync time.Duration) time.Duration {
	return time.Duration(max(depth, 0))*ServerBundleSyncInterval + agentSync
}

// warnPropagation warns when a server's rotation leaves less time between
// publishing its next CA or JWT key (at half its ca_ttl) and using it (when a
// sixth remains) than the new authority needs to reach every workload.
func (p *parser) warnPropagation(f *File, s *Server, deepest int) {
	if s.CATTL <= 0 || deepest < 0 {
		return
	}
	agentSync := f.Defaults.SyncInterval
	if agentSync <= 0 {
		agentSync = DefaultSyncInterval
	}
	margin, need := s.CATTL/2-s.CATTL/6, PropagationBound(deepest, agentSync)
	if margin >= need {
		return
	}
	rng := s.Range
	if s.caTTLRange != nil && p.within(*s.caTTLRange, s.bodyRange) {
		rng = *s.caTTLRange
	}
	p.warnf(rng, "Rotation margin shorter than propagation",
		"Server %q publishes its next CA and JWT key at half its ca_ttl (%s) and starts signing with them %s later, when a sixth remains. A new authority needs up to %s to reach every workload of this tree: %d tier(s) below the root × the %s bundle sync of downstream servers, plus the agents' %s sync_interval. Workloads that have not received it would reject what it signs. Raise ca_ttl to at least %s.",
		s.Name, formatDuration(s.CATTL), formatDuration(margin), formatDuration(need), deepest,
		formatDuration(ServerBundleSyncInterval), formatDuration(agentSync), formatDuration(3*need))
}

func (p *parser) checkRoots(f *File) {
	var roots []*Server
	for _, s := range f.Servers {
		if s.Parent == "" && !p.broken(s, "parent") {
			roots = append(roots, s)
		}
	}
	for _, s := range roots[min(1, len(roots)):] {
		p.errorf(s.Range, "More than one root",
			"Server %q has no parent, but %q (line %d) is already the root; a trust domain has exactly one root tier (for several root processes use replicas). Set parent = %q (or the server it should hang under), or remove the block.",
			s.Name, roots[0].Name, roots[0].Range.Start.Line, roots[0].Name)
	}
}

// checkCycles reports each loop of parents once, at the parent attribute
// of its first server in file order.
func (p *parser) checkCycles(f *File) {
	reported := map[string]bool{}
	for _, start := range f.Servers {
		var path []string
		onPath := map[string]int{}
		for cur := start; cur != nil && cur.Parent != ""; cur = f.server(cur.Parent) {
			if i, loop := onPath[cur.Name]; loop {
				cycle := path[i:]
				if !slices.ContainsFunc(cycle, func(n string) bool { return reported[n] }) {
					for _, n := range cycle {
						reported[n] = true
					}
					first := f.server(cycle[0])
					for _, n := range cycle {
						if s := f.server(n); slices.Index(f.Servers, s) < slices.Index(f.Servers, first) {
							first = s
						}
					}
					loop := rotate(cycle, first.Name)
					p.errorf(first.AttrRange("parent"), "Cycle of parents",
						"The parents of these servers form a loop: %s -> %s. Every chain of parents must end at the root; set parent on one of them to a server outside the loop, or remove it to make that server the root.",
						strings.Join(loop, " -> "), loop[0])
				}
				break
			}
			if cur.Parent == cur.Name {
				break // reported by checkParents
			}
			onPath[cur.Name] = len(path)
			path = append(path, cur.Name)
		}
	}
}

// rotate returns the cycle starting at name.
func rotate(cycle []string, name string) []string {
	i := slices.Index(cycle, name)
	return append(slices.Clone(cycle[i:]), cycle[:i]...)
}

func (p *parser) checkServerInTree(f *File, s *Server) {
	if s.Upstream != nil && s.Parent != "" && !p.broken(s, "upstream") {
		p.errorf(s.Upstream.Range, "Upstream on a downstream server",
			"Server %q has parent %q, which already signs its CA; only the root takes its CA from an upstream authority. Remove the upstream block, or move it to the root.", s.Name, s.Parent)
	}
	if s.Parent == "" && s.Agent != nil && !s.agentDefaulted && (s.Upstream == nil || s.Upstream.Kind != UpstreamSPIRE) &&
		!p.broken(s, "parent", "upstream") {
		p.errorf(s.Agent.Range, "Agent block on the root",
			"Server %q has no parent for a co-located agent to attest to: the agent block describes how a downstream server's agent attests to its parent (or, on a root, to an upstream \"spire\" server). Remove the block, or give the server a parent.", s.Name)
	}
	if s.Upstream != nil && s.Upstream.AWSPCA != nil && s.Upstream.AWSPCA.CASigningTemplateARN == DefaultPCATemplateARN && !p.broken(s, "upstream") {
		deepest := 0
		for _, o := range f.Servers {
			deepest = max(deepest, f.Depth(o.Name))
		}
		if deepest > 3 {
			p.errorf(s.Upstream.Range, "Tree too deep for the CA template",
				"The default ACM PCA template (%s) allows 3 tiers below the root, but this tree has %d. Set ca_signing_template_arn to a template with a longer path length, or flatten the tree.", DefaultPCATemplateARN, deepest)
		}
	}
	parent := f.server(s.Parent)
	if parent == nil || parent == s || f.Depth(s.Name) < 0 {
		return // unknown parent or a cycle: reported already
	}
	if s.CATTL > 0 && parent.CATTL > 0 && s.CATTL > parent.CATTL/2 && !p.broken(s, "ca_ttl") && !p.broken(parent, "ca_ttl") {
		rng, origin := s.Range, "inherited"
		if s.caTTLRange != nil {
			if p.within(*s.caTTLRange, s.bodyRange) {
				rng, origin = *s.caTTLRange, "set here"
			} else {
				origin = fmt.Sprintf("from the defaults block, line %d", s.caTTLRange.Start.Line)
			}
		} else {
			origin = "the built-in default"
		}
		p.errorf(rng, "CA TTL too long for the parent",
			"Server %q: ca_ttl is %s (%s) but its parent %q has ca_ttl %s. A child CA may live at most half its parent's, so the parent, rotating at half-life, can always sign a full-length child CA. Set ca_ttl on %q to at most %s, or raise %q's ca_ttl to at least %s.",
			s.Name, formatDuration(s.CATTL), origin, parent.Name, formatDuration(parent.CATTL), s.Name, formatDuration(parent.CATTL/2), parent.Name, formatDuration(2*s.CATTL))
	}
	if s.Agent != nil && !p.broken(s, "agent") && !p.broken(parent, "node_attestor") {
		kind := s.Agent.NodeAttestor.Kind
		accepted, ok := parent.NodeAttestor(kind)
		if !ok {
			var kinds []string
			for _, a := range parent.NodeAttestors {
				kinds = append(kinds, a.Kind)
			}
			p.errorf(s.Agent.NodeAttestor.Range, "Parent does not accept the agent's attestor",
				"The co-located agent of %q attests to %q with %s, but %q accepts only %s. Add node_attestor %q { ... } to server %q, or attest the agent with %s.",
				s.Name, parent.Name, kind, parent.Name, strings.Join(kinds, ", "), kind, parent.Name, quotedList(kinds))
		} else if kind == NodeAttestorK8sPSAT {
			p.checkAgentCluster(s, parent, accepted.K8sPSAT)
		}
	}
}

// checkAgentCluster refuses a k8s_psat co-located agent whose cluster its
// parent does not list: the parent would refuse every attestation.
func (p *parser) checkAgentCluster(s, parent *Server, accepted K8sPSAT) {
	na := s.Agent.NodeAttestor
	if _, ok := accepted.Cluster(na.Cluster); ok || na.Cluster == "" {
		return
	}
	names := accepted.ClusterNames()
	hint := ""
	if sug := suggest(na.Cluster, names); sug != "" {
		hint = fmt.Sprintf(" Did you mean %q?", sug)
	}
	p.errorf(na.clusterRange, "Unknown Kubernetes cluster",
		"The co-located agent of %q attests to %q from cluster %q, but %q's node_attestor \"k8s_psat\" has no cluster of that name, so it would refuse the agent.%s Clusters %q accepts: %s. Name one of them, or add cluster %q { ... } to %q's k8s_psat block.",
		s.Name, parent.Name, na.Cluster, parent.Name, hint, parent.Name, strings.Join(names, ", "), na.Cluster, parent.Name)
}

// hostItem is one thing that must be unique among the servers of a host
// (and among the replicas of one block, which run on its host).
type hostItem struct {
	what, value, attr string
	server            *Server
}

// where is the attribute to point at for the item: the attribute itself
// for replica 1, the block's replicas attribute for a value derived for
// replica K.
func (it hostItem) where() hcl.Range {
	if it.server.ReplicaNumber > 1 {
		return it.server.AttrRange("replicas")
	}
	if it.attr == "agent" && it.server.Agent != nil {
		return it.server.Agent.Range
	}
	return it.server.AttrRange(it.attr)
}

// who names the server or replica of the item in a diagnostic.
func (it hostItem) who() string {
	if it.server.ReplicaNumber > 1 {
		return fmt.Sprintf("server %q (replica %d of %q, derived from its replicas)", it.server.Node(), it.server.ReplicaNumber, it.server.Name)
	}
	return fmt.Sprintf("server %q", it.server.Name)
}

// replicasOf is s and, when its replicas attribute is sound, its replicas
// 2 to N, whose ports and paths derive from s (Server.Replica).
func (p *parser) replicasOf(s *Server) []*Server {
	if p.broken(s, "replicas") {
		return []*Server{s}
	}
	return s.ReplicaList()
}

// checkReplicas reports derived ports beyond 65535 and derived socket
// paths too long for Unix sockets, at the replicas attribute.
func (p *parser) checkReplicas(s *Server) {
	if s.Replicas <= 1 || p.broken(s, "replicas") {
		return
	}
	last := s.Replica(s.Replicas)
	ports := []struct{ attr, base, derived string }{{"listen", s.Listen, last.Listen}, {"health_listen", s.HealthListen, last.HealthListen}}
	if s.BundleEndpoint != nil {
		ports = append(ports, struct{ attr, base, derived string }{"bundle_endpoint listen", s.BundleEndpoint.Listen, last.BundleEndpoint.Listen})
	}
	if s.OIDCDiscovery != nil {
		ports = append(ports, struct{ attr, base, derived string }{"oidc_discovery listen", s.OIDCDiscovery.Listen, last.OIDCDiscovery.Listen})
	}
	for _, pt := range ports {
		_, port, err := net.SplitHostPort(pt.derived)
		if n, perr := strconv.Atoi(port); err == nil && perr == nil && n > 65535 {
			p.errorf(s.AttrRange("replicas"), "Replica port out of range",
				"Replica %d of server %q would listen on %s (%s %s plus %d), beyond port 65535. Lower the block's %s port, or run fewer replicas.",
				s.Replicas, s.Name, pt.derived, pt.attr, pt.base, s.Replicas-1, pt.attr)
		}
	}
	socks := []struct{ what, path string }{{"admin socket", last.AdminSocket}}
	if last.Agent != nil {
		socks = append(socks, struct{ what, path string }{"agent socket", last.Agent.SocketPath})
	}
	for _, sk := range socks {
		if len(sk.path) > maxSocketPath {
			p.errorf(s.AttrRange("replicas"), "Replica socket path too long",
				"The %s of replica %s is %s, %d bytes; Unix sockets allow at most %d. Set state_dir (or admin_socket and the agent's socket_path) of server %q to a shorter path.",
				sk.what, last.Node(), sk.path, len(sk.path), maxSocketPath, s.Name)
		}
	}
}

// checkHosts compares what must differ between servers: their addresses,
// and on one host their ports and paths. A value whose attribute (or the
// attribute it derives from) has an error is left out.
func (p *parser) checkHosts(f *File) {
	var addrs []hostItem
	byHost := map[string][]*Server{}
	for _, s := range f.Servers {
		addressBroken := p.broken(s, "address") || (s.attrs["address"] == hcl.Range{} && p.broken(s, "listen"))
		if !addressBroken {
			for _, a := range s.Addresses {
				addrs = append(addrs, hostItem{"address", a, "address", s})
			}
		}
		if !p.broken(s, "host") && (s.attrs["host"] != hcl.Range{} || !addressBroken) {
			byHost[s.Host] = append(byHost[s.Host], s)
		}
	}
	for i, a := range addrs {
		for _, b := range addrs[:i] {
			_, aSet := a.server.attrs["address"]
			_, bSet := b.server.attrs["address"]
			if a.value == b.value && a.server != b.server && (aSet || bSet) {
				p.errorf(a.server.AttrRange("address"), "Duplicate address",
					"Servers %q and %q (line %d) are both reached at %s, so agents and children of one would reach the other. Give each server its own address.",
					a.server.Name, b.server.Name, b.server.Range.Start.Line, a.value)
				break
			}
		}
	}
	for _, host := range sortedKeys(byHost) {
		var servers []*Server
		for _, s := range byHost[host] {
			servers = append(servers, p.replicasOf(s)...)
		}
		var listens, paths []hostItem
		for _, s := range servers {
			if !p.broken(s, "listen") {
				listens = append(listens, hostItem{"listen", s.Listen, "listen", s})
			}
			if s.HealthListen != "" && !p.broken(s, "health_listen") {
				listens = append(listens, hostItem{"health_listen", s.HealthListen, "health_listen", s})
			}
			if p.broken(s, "state_dir") {
				continue // every default path derives from it
			}
			if !p.broken(s, "admin_socket") {
				paths = append(paths, hostItem{"admin socket", s.AdminSocket, "admin_socket", s})
			}
			paths = append(paths, hostItem{"state directory", s.StateDir, "state_dir", s})
			if s.Datastore.Kind == DatastoreSQLite && !p.broken(s, "datastore") {
				paths = append(paths, hostItem{"SQLite database", s.Datastore.Path, "datastore", s})
			}
			if s.Agent != nil && !p.broken(s, "agent") {
				paths = append(paths,
					hostItem{"agent socket", s.Agent.SocketPath, "agent", s},
					hostItem{"agent data directory", s.Agent.DataDir, "agent", s})
			}
		}
		for i, a := range listens {
			for _, b := range listens[:i] {
				if a.server == b.server && a.attr == b.attr {
					continue
				}
				if listenConflict(a.value, b.value) {
					fix := "Give one of them another port, or set host if they run on different machines."
					if a.server.ReplicaNumber > 1 || b.server.ReplicaNumber > 1 {
						fix = "Replica K listens on each port of its block plus K-1: space the blocks' ports (listen, health_listen) at least replicas apart, or set host if they run on different machines."
					}
					p.errorf(a.where(), "Duplicate listen port",
						"%s = %q of %s and %s = %q of %s (line %d) use the same port on host %q; only one process can listen there. %s",
						a.attr, a.value, a.who(), b.attr, b.value, b.who(), b.server.Range.Start.Line, host, fix)
					break
				}
			}
		}
		for i, a := range paths {
			for _, b := range paths[:i] {
				if a.value != b.value || a.value == "" {
					continue
				}
				whose := fmt.Sprintf("%s (line %d)", b.who(), b.server.Range.Start.Line)
				if a.server == b.server {
					whose = "its own " + b.what
				}
				p.errorf(a.where(), "Duplicate path on one host",
					"The %s of %s is %s, which is also the %s of %s, on host %q. Give each its own path (state_dir sets them all for a server).",
					a.what, a.who(), a.value, b.what, whose, host)
				break
			}
		}
	}
}

// listenConflict reports whether two listen addresses on one host would
// take the same port: same port, and the same IP or one of them listening
// on every interface. Port 0 (pick any) never conflicts.
func listenConflict(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	any := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || (ip != nil && ip.IsUnspecified())
	}
	return any(ha) || any(hb) || strings.EqualFold(ha, hb)
}

func (p *parser) checkFederatesWith(f *File) {
	declared := map[string]Federation{}
	for _, fed := range f.Federations {
		declared[fed.TrustDomain.Name()] = fed
	}
	for _, s := range f.Servers {
		// An entry left out for an error in its IDs still has its
		// federates_with checked; only the comparison of IDs skips it.
		for _, e := range s.invalidEntries {
			for _, td := range e.FederatesWith {
				if _, ok := declared[td]; !ok {
					p.errorUndeclaredFederation(e, td)
				}
			}
		}
		var seen []Entry
		for _, e := range s.Entries {
			for _, td := range e.FederatesWith {
				fed, ok := declared[td]
				if !ok {
					p.errorUndeclaredFederation(e, td)
					continue
				}
				// The bundle reaches only the fetcher's subtree; an unknown
				// fetched_by is reported already.
				if fetcher := f.Fetcher(fed); fetcher != nil && !f.InSubtree(s.Name, fetcher.Name) {
					p.errorf(e.federatesRange, "Federated bundle not received here",
						"Entry %q of server %q federates with %q, whose bundle is fetched by %q (line %d); only %q and the servers below it receive it, and %q is not one of them, so its workloads would never get that bundle. Set fetched_by to %q or a server above it (removing fetched_by makes the root fetch it), or move the entry to a server below %q.",
						e.Name, s.Name, td, fetcher.Name, fed.fetchedByRange.Start.Line, fetcher.Name, s.Name, s.Name, fetcher.Name)
				}
			}
			for _, o := range seen {
				if !e.SPIFFEID.IsZero() && e.SPIFFEID == o.SPIFFEID && e.ParentID == o.ParentID && sameSelectors(e.Selectors, o.Selectors) {
					p.errorf(e.Range, "Duplicate entry",
						"Entry %q of server %q has the same SPIFFE ID, parent ID and selectors as entry %q (line %d); the server would reject the second. Remove one, or change its selectors.", e.Name, s.Name, o.Name, o.Range.Start.Line)
					break
				}
			}
			seen = append(seen, e)
		}
	}
}

func (p *parser) errorUndeclaredFederation(e Entry, td string) {
	p.errorf(e.federatesRange, "Unknown federated trust domain",
		"Entry %q federates with %q, but no federation block declares it, so no server would have its bundle. Add federation %q { bundle_endpoint = \"https://...\" }, or remove it from federates_with.", e.Name, td, td)
}

func sameSelectors(a, b []string) bool {
	parse := func(in []string) []selector.Selector {
		var out []selector.Selector
		for _, s := range in {
			if sel, err := selector.Parse(s); err == nil {
				out = append(out, sel)
			}
		}
		return out
	}
	return selector.Equal(parse(a), parse(b))
}

// MinOutageBudget is the outage budget below which validation warns.
func (f *File) MinOutageBudget() time.Duration {
	if f.Defaults.MinOutageBudget > 0 {
		return f.Defaults.MinOutageBudget
	}
	return DefaultMinOutageBudget
}

func (p *parser) warnServer(f *File, s *Server) {
	if s.Agent != nil && s.Agent.NodeAttestor.Kind == NodeAttestorJoinToken && !p.broken(s, "agent") && p.agentAllowed(f, s) {
		upstream := s.Parent
		ttl := formatDuration(s.AgentSVIDTTL)
		if parent := f.server(s.Parent); parent != nil {
			ttl = formatDuration(parent.AgentSVIDTTL)
		} else if s.Upstream != nil && s.Upstream.SPIRE != nil {
			upstream = s.Upstream.SPIRE.ServerAddress
		}
		p.warnf(s.Agent.NodeAttestor.Range, "Co-located agent attests with a join token",
			"The agent beside %q attests to %s with a single-use join token. If %s is unreachable for longer than the agent's SVID lifetime (%s), the agent cannot re-attest by itself and the tier needs a new token by hand. Prefer an attestor that can re-attest, such as node_attestor \"x509pop\" in the agent block.",
			s.Name, upstream, upstream, ttl)
	}
	if (s.Parent != "" || s.Upstream != nil) && s.CATTL > 0 && !p.broken(s, "ca_ttl") {
		if budget, minimum := s.CATTL/2, f.MinOutageBudget(); budget < minimum {
			rng := s.Range
			if s.caTTLRange != nil && p.within(*s.caTTLRange, s.bodyRange) {
				rng = *s.caTTLRange
			}
			above := "its parent"
			if s.Parent == "" {
				above = "its upstream authority"
			}
			p.warnf(rng, "Outage budget below the minimum",
				"Server %q keeps issuing for only %s if %s is down (half its ca_ttl %s, at worst), below the minimum of %s. Raise ca_ttl to at least %s, or lower min_outage_budget in the defaults block if that is intended.",
				s.Name, formatDuration(budget), above, formatDuration(s.CATTL), formatDuration(minimum), formatDuration(2*minimum))
		}
	}
	if s.Replicas > 1 && s.Datastore.Kind == DatastoreSQLite && !p.broken(s, "datastore") {
		p.warnf(s.AttrRange("replicas"), "SQLite with replicas",
			"Server %q runs %d replicas on SQLite: each process would have its own database, so entries, agents and join tokens written through one are unknown to the others. Use datastore \"postgres\" { dsn = ... } shared by all replicas.", s.Name, s.Replicas)
	}
}

// agentAllowed reports whether s may have its co-located agent and its
// parent accepts the agent's attestor, so that warning about the agent is
// not noise on top of an error.
func (p *parser) agentAllowed(f *File, s *Server) bool {
	if s.Parent == "" {
		return s.Upstream != nil && s.Upstream.Kind == UpstreamSPIRE
	}
	parent := f.server(s.Parent)
	if parent == nil {
		return false
	}
	_, ok := parent.NodeAttestor(s.Agent.NodeAttestor.Kind)
	return ok
}

func (p *parser) within(r, outer hcl.Range) bool {
	return r.Filename == outer.Filename && r.Start.Byte >= outer.Start.Byte && r.Start.Byte <= outer.End.Byte
}

func (p *parser) warnf(rng hcl.Range, summary, detail string, args ...any) {
	r := rng
	p.diags = append(p.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(detail, args...),
		Subject:  &r,
	})
}
