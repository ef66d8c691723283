// Package reconcile brings running servers in line with the topology file:
// the downstream entries through which each child server obtains its CA from
// its parent, the join tokens of co-located agents, the entry blocks, and
// the federation relationships (federation.go). It is what `arbor topology
// apply` and `arbor up` run; it is idempotent and never deletes.
package reconcile

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/topology"
)

// Desired is an entry the topology wants on a server.
type Desired struct {
	// Why names the topology element that asks for it, for the plan output.
	Why   string
	Entry *types.Entry
}

// DesiredEntries returns the entries server s must hold: a downstream entry
// for each child's server process, and s's entry blocks. uid is the user the
// child servers run as (for the default unix:uid selector).
func DesiredEntries(f *topology.File, s *topology.Server, uid int) ([]Desired, error) {
	var out []Desired
	for _, c := range f.Children(s.Name) {
		if c.Agent == nil {
			return nil, fmt.Errorf("reconcile: server %q has no agent block to attest to %q", c.Name, s.Name)
		}
		parentID, err := agentIdentity(f, s, c)
		if err != nil {
			return nil, err
		}
		sels := c.Agent.ServerSelectors
		if len(sels) == 0 {
			sels = []string{fmt.Sprintf("unix:uid:%d", uid)}
		}
		e, err := NewEntry(f.TrustDomain, c.SPIFFEID, parentID, sels)
		if err != nil {
			return nil, fmt.Errorf("reconcile: downstream entry for %q: %w", c.Name, err)
		}
		e.Downstream = true
		out = append(out, Desired{Why: fmt.Sprintf("server %q (downstream of %q)", c.Name, s.Name), Entry: e})
	}
	for _, b := range s.Entries {
		e, err := NewEntry(f.TrustDomain, b.SPIFFEID, b.ParentID, b.Selectors)
		if err != nil {
			return nil, fmt.Errorf("reconcile: entry %q of server %q: %w", b.Name, s.Name, err)
		}
		e.X509SvidTtl = int32(b.X509SVIDTTL / time.Second)
		e.JwtSvidTtl = int32(b.JWTSVIDTTL / time.Second)
		e.DnsNames = b.DNSNames
		e.Admin = b.Admin
		e.Downstream = b.Downstream
		e.FederatesWith = b.FederatesWith
		e.Hint = b.Hint
		out = append(out, Desired{Why: fmt.Sprintf("entry %q of server %q", b.Name, s.Name), Entry: e})
	}
	return out, nil
}

// agentIdentity is the SPIFFE ID under which child c's co-located agent is
// known to its parent p: the alias of its join token, or its x509pop agent ID
// computed from its certificate.
func agentIdentity(f *topology.File, p, c *topology.Server) (spiffeid.ID, error) {
	switch c.Agent.NodeAttestor.Kind {
	case "", topology.NodeAttestorJoinToken:
		return c.Agent.SPIFFEID, nil
	case topology.NodeAttestorX509PoP:
		certs, err := x509pop.LoadCertificates(c.Agent.NodeAttestor.CertificatePath)
		if err != nil || len(certs) == 0 {
			return spiffeid.ID{}, fmt.Errorf("reconcile: server %q's agent certificate %s is needed to name it to %q: %v",
				c.Name, c.Agent.NodeAttestor.CertificatePath, p.Name, err)
		}
		tmplText := ""
		if na, ok := p.NodeAttestor(topology.NodeAttestorX509PoP); ok {
			tmplText = na.X509PoP.AgentPathTemplate
		}
		id, err := X509PoPAgentID(f.TrustDomain, tmplText, certs[0])
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("reconcile: server %q's x509pop agent_path_template: %w", p.Name, err)
		}
		return id, nil
	}
	return spiffeid.ID{}, fmt.Errorf("reconcile: server %q's agent attests with %q, which apply does not know", c.Name, c.Agent.NodeAttestor.Kind)
}

// X509PoPAgentID is the SPIFFE ID a parent whose x509pop attestor has the
// agent path template tmplText (empty: x509pop.DefaultAgentPathTemplate)
// gives the agent presenting leaf.
func X509PoPAgentID(td spiffeid.TrustDomain, tmplText string, leaf *x509.Certificate) (spiffeid.ID, error) {
	if tmplText == "" {
		tmplText = x509pop.DefaultAgentPathTemplate
	}
	tmpl, err := x509pop.NewPathTemplate(tmplText)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return tmpl.AgentID(td, leaf, nil)
}

// NewEntry builds the entry for id under parent, refusing what SPIRE's server
// API would (idpolicy): a topology parsed by topology.Parse never holds such
// IDs, but a File built in code (or a Terraform configuration) may.
func NewEntry(td spiffeid.TrustDomain, id, parent spiffeid.ID, sels []string) (*types.Entry, error) {
	if err := idpolicy.ParentID(td, parent); err != nil {
		return nil, fmt.Errorf("parent ID: %w", err)
	}
	if err := idpolicy.WorkloadID(td, id); err != nil {
		return nil, fmt.Errorf("SPIFFE ID: %w", err)
	}
	e := &types.Entry{
		SpiffeId: &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
		ParentId: &types.SPIFFEID{TrustDomain: parent.TrustDomain().Name(), Path: parent.Path()},
	}
	for _, s := range sels {
		sel, err := selector.Parse(s)
		if err != nil {
			return nil, err
		}
		e.Selectors = append(e.Selectors, &types.Selector{Type: sel.Type, Value: sel.Value})
	}
	return e, nil
}

// Action is one change of a plan.
type Action struct {
	Server string
	Kind   string // "create", "update", "unchanged"
	Why    string
	Entry  *types.Entry
	// ExistingID is the ID of the entry an update replaces.
	ExistingID string
}

func (a Action) String() string {
	sign := map[string]string{"create": "+", "update": "~", "unchanged": "="}[a.Kind]
	return fmt.Sprintf("%s %s: %s %s <- %s (%s)", sign, a.Server, a.Kind,
		idString(a.Entry.SpiffeId), idString(a.Entry.ParentId), a.Why)
}

func idString(p *types.SPIFFEID) string { return "spiffe://" + p.TrustDomain + p.Path }

// Plan compares the desired entries of one server with what it holds. An
// existing entry with the same SPIFFE ID and parent is the one to update.
func Plan(ctx context.Context, c *admin.Client, server string, want []Desired) ([]Action, error) {
	have, err := c.ListEntries(ctx, admin.EntryFilter{})
	if err != nil {
		return nil, fmt.Errorf("reconcile: listing entries of %q: %w", server, err)
	}
	var out []Action
	for _, d := range want {
		a := Action{Server: server, Why: d.Why, Entry: d.Entry, Kind: "create"}
		for _, h := range have {
			if idString(h.SpiffeId) == idString(d.Entry.SpiffeId) && idString(h.ParentId) == idString(d.Entry.ParentId) {
				a.ExistingID = h.Id
				a.Kind = "update"
				if same(h, d.Entry) {
					a.Kind = "unchanged"
				}
				break
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func same(have, want *types.Entry) bool {
	sels := func(ss []*types.Selector) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Type+":"+s.Value)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	return slices.Equal(sels(have.Selectors), sels(want.Selectors)) &&
		have.X509SvidTtl == want.X509SvidTtl && have.JwtSvidTtl == want.JwtSvidTtl &&
		have.Admin == want.Admin && have.Downstream == want.Downstream && have.Hint == want.Hint &&
		slices.Equal(have.DnsNames, want.DnsNames) && slices.Equal(sorted(have.FederatesWith), sorted(want.FederatesWith))
}

// Apply carries out the create and update actions of a plan.
func Apply(ctx context.Context, c *admin.Client, actions []Action) error {
	var errs []error
	for _, a := range actions {
		switch a.Kind {
		case "create":
			if _, err := c.CreateEntry(ctx, a.Entry); err != nil {
				errs = append(errs, fmt.Errorf("%s: creating %s: %w", a.Server, idString(a.Entry.SpiffeId), err))
			}
		case "update":
			e := proto.Clone(a.Entry).(*types.Entry)
			e.Id = a.ExistingID
			if err := c.UpdateEntry(ctx, e); err != nil {
				errs = append(errs, fmt.Errorf("%s: updating %s: %w", a.Server, idString(a.Entry.SpiffeId), err))
			}
		}
	}
	return errors.Join(errs...)
}

// JoinToken creates, on parent's server, a join token for child's
// co-located agent whose alias is the child's agent SPIFFE ID.
func JoinToken(ctx context.Context, c *admin.Client, child *topology.Server, ttl time.Duration) (string, error) {
	id := child.Agent.SPIFFEID
	if err := idpolicy.WorkloadID(id.TrustDomain(), id); err != nil {
		return "", fmt.Errorf("reconcile: join token alias of %q's agent: %w", child.Name, err)
	}
	tok, err := c.CreateJoinToken(ctx, id, ttl)
	if err != nil {
		return "", fmt.Errorf("reconcile: join token for %q's agent: %w", child.Name, err)
	}
	return tok, nil
}

// Options configures Run.
type Options struct {
	DryRun bool
	// UID is the user the child servers run as; zero means os.Getuid().
	UID int
	Out io.Writer
}

// Run plans (and unless DryRun applies) every server of the file, root
// first, through their admin sockets: its entries and the federation
// relationships it fetches. Servers that are not running are reported and
// skipped (a server given nothing by the file is skipped silently); the
// error says how many could not be reconciled.
func Run(ctx context.Context, f *topology.File, opts Options) error {
	uid := opts.UID
	if uid == 0 {
		uid = os.Getuid()
	}
	var failed []string
	changes := 0
	for _, s := range f.Walk() {
		want, err := DesiredEntries(f, s, uid)
		var feds []DesiredFederation
		if err == nil {
			feds, err = DesiredFederations(f, s)
		}
		if err != nil {
			fmt.Fprintf(opts.Out, "! %s: %v\n", s.Name, err)
			failed = append(failed, s.Name)
			continue
		}
		// A server the file gives nothing is still asked for the
		// relationships it holds that the file no longer names, when
		// it runs.
		clusters, hasPSAT := DesiredK8sPSATClusters(s)
		optional := len(want) == 0 && len(feds) == 0 && !hasPSAT
		conn, err := admin.Dial(s.AdminSocket)
		if err != nil {
			if !optional {
				fmt.Fprintf(opts.Out, "! %s: %v\n", s.Name, err)
				failed = append(failed, s.Name)
			}
			continue
		}
		var actions []Action
		if len(want) > 0 {
			actions, err = Plan(ctx, conn, s.Name, want)
		}
		var fedActions []FederationAction
		if err == nil {
			fedActions, err = PlanFederations(ctx, conn, f, s, feds)
		}
		if optional && errors.Is(err, admin.ErrUnreachable) {
			conn.Close()
			continue
		}
		// One action at a time, so that the count is of what was
		// (or, in a dry run, would be) changed.
		var errs []error
		for _, a := range actions {
			fmt.Fprintln(opts.Out, a)
			if err != nil || a.Kind == "unchanged" {
				continue
			}
			if !opts.DryRun {
				if aerr := Apply(ctx, conn, []Action{a}); aerr != nil {
					errs = append(errs, aerr)
					continue
				}
			}
			changes++
		}
		for _, a := range fedActions {
			fmt.Fprintln(opts.Out, a)
			if err != nil || (a.Kind != "create" && a.Kind != "update") {
				continue
			}
			if !opts.DryRun {
				if aerr := ApplyFederations(ctx, conn, []FederationAction{a}); aerr != nil {
					errs = append(errs, aerr)
					continue
				}
			}
			changes++
		}
		if err == nil && hasPSAT {
			n, perr := reconcileK8sPSAT(ctx, conn, s, clusters, opts)
			if perr != nil {
				errs = append(errs, perr)
			}
			changes += n
		}
		conn.Close()
		if err = errors.Join(append([]error{err}, errs...)...); err != nil {
			fmt.Fprintf(opts.Out, "! %s: %v\n", s.Name, err)
			failed = append(failed, s.Name)
		}
	}
	verb := "applied"
	if opts.DryRun {
		verb = "would apply"
	}
	fmt.Fprintf(opts.Out, "%s %d change(s)\n", verb, changes)
	if len(failed) > 0 {
		return fmt.Errorf("reconcile: %d server(s) not reconciled: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}
