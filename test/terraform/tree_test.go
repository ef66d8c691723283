package terraform

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// tierOutputs is what the test reads of a tier's module outputs: what a VM
// needs to start the tier.
type tierOutputs struct {
	SPIFFEID      string            `json:"spiffe_id"`
	AdminSocket   string            `json:"admin_socket"`
	Files         map[string]string `json:"files"`
	ServerCommand []string          `json:"server_command"`
	AgentCommand  []string          `json:"agent_command"`
	CloudInit     string            `json:"cloud_init"`
	// KubernetesManifests is a leaf's (region module) YAML documents.
	KubernetesManifests string `json:"kubernetes_manifests"`
}

// regionOutputs is the region module's outputs: the region's own tier
// (flattened or under "region") and its leaves.
type regionOutputs struct {
	tierOutputs
	Region *tierOutputs            `json:"region"`
	Leaves map[string]*tierOutputs `json:"leaves"`
}

func (r regionOutputs) tier() tierOutputs {
	if r.Region != nil {
		return *r.Region
	}
	return r.tierOutputs
}

// example is the applied example tree: its working copy and variables.
type example struct {
	t         *testing.T
	dir       string // terraform/examples/tree in the working copy
	stateRoot string
	vars      []string // -var arguments, without regions_serving
}

func (e *example) args(cmd string, serving bool, extra ...string) []string {
	a := append([]string{cmd}, e.vars...)
	a = append(a, "-var", "regions_serving="+strconv.FormatBool(serving))
	return append(a, extra...)
}

func (e *example) apply(serving bool) {
	e.t.Helper()
	mustTofu(e.t, e.dir, 5*time.Minute, e.args("apply", serving, "-auto-approve")...)
}

// planNoChanges fails the test unless a plan reports no changes (exit 0
// with -detailed-exitcode; 2 means changes).
func (e *example) planNoChanges(serving bool, when string) {
	e.t.Helper()
	r := tofu(e.t, e.dir, 3*time.Minute, e.args("plan", serving, "-detailed-exitcode")...)
	if r.code != 0 {
		e.t.Fatalf("tofu plan %s: want no changes (exit 0): %s", when, r)
	}
}

// resourceChanges plans and returns the resources the plan would change
// ("address: actions"), ignoring output values.
func (e *example) resourceChanges(serving bool) []string {
	e.t.Helper()
	planFile := filepath.Join(e.t.TempDir(), "plan")
	mustTofu(e.t, e.dir, 3*time.Minute, e.args("plan", serving, "-out="+planFile)...)
	r := mustTofu(e.t, e.dir, time.Minute, "show", "-json", planFile)
	var plan struct {
		ResourceChanges []struct {
			Address string `json:"address"`
			Change  struct {
				Actions []string `json:"actions"`
			} `json:"change"`
		} `json:"resource_changes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		e.t.Fatalf("tofu show -json: %v", err)
	}
	var changed []string
	for _, rc := range plan.ResourceChanges {
		a := strings.Join(rc.Change.Actions, ",")
		if a != "no-op" && a != "read" {
			changed = append(changed, rc.Address+": "+a)
		}
	}
	return changed
}

// rootOutputs is the root tier module's outputs.
func (e *example) rootOutputs() (o struct {
	EntryIDs map[string]string `json:"entry_ids"`
}) {
	e.t.Helper()
	r := mustTofu(e.t, e.dir, time.Minute, "output", "-json", "root")
	if err := json.Unmarshal([]byte(r.stdout), &o); err != nil {
		e.t.Fatalf("tofu output -json root: %v\n%s", err, r.stdout)
	}
	return o
}

func (e *example) outputs() (regionA, regionB regionOutputs) {
	e.t.Helper()
	r := mustTofu(e.t, e.dir, time.Minute, "output", "-json")
	var out map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		e.t.Fatalf("tofu output -json: %v\n%s", err, r.stdout)
	}
	for name, dst := range map[string]*regionOutputs{"region_a": &regionA, "region_b": &regionB} {
		v, ok := out[name]
		if !ok {
			e.t.Fatalf("the example has no output %q (outputs: %v)", name, keys(out))
		}
		if err := json.Unmarshal(v.Value, dst); err != nil {
			e.t.Fatalf("output %s: %v\n%s", name, err, v.Value)
		}
	}
	return regionA, regionB
}

func keys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// bootTier starts a tier from its module outputs as its VM's cloud-init
// would: write the files, start the co-located agent, then the server, and
// wait until the server serves.
func bootTier(t *testing.T, logDir, name string, o tierOutputs) *admin.Client {
	t.Helper()
	if len(o.Files) == 0 || len(o.AgentCommand) == 0 || len(o.ServerCommand) == 0 {
		t.Fatalf("%s: the module's outputs lack files, agent_command or server_command: %+v", name, o)
	}
	writeFiles(t, o.Files)
	ag := start(t, logDir, name+"-agent", o.AgentCommand)
	srv := start(t, logDir, name+"-server", o.ServerCommand)
	return waitServing(t, o.AdminSocket, 120*time.Second, ag, srv)
}

// bootFromCloudInit starts a tier from its cloud_init output as a VM's
// cloud-init and systemd would: it writes the write_files entries (with
// their permissions), creates the directories runcmd installs, and runs the
// ExecStart of each systemd unit the document writes, in the order runcmd
// enables them (agent, then server). The units' commands must be the
// module's agent_command and server_command.
func bootFromCloudInit(t *testing.T, logDir, name string, o tierOutputs) *admin.Client {
	t.Helper()
	body, ok := strings.CutPrefix(o.CloudInit, "#cloud-config\n")
	if !ok {
		t.Fatalf("%s: cloud_init does not start with #cloud-config: %.200q", name, o.CloudInit)
	}
	var doc struct {
		WriteFiles []struct {
			Path        string `json:"path"`
			Content     string `json:"content"`
			Permissions string `json:"permissions"`
		} `json:"write_files"`
		RunCmd [][]string `json:"runcmd"`
	}
	if err := yaml.UnmarshalStrict([]byte(body), &doc); err != nil {
		t.Fatalf("%s: cloud_init is not the YAML cloud-init reads: %v", name, err)
	}
	units := map[string][]string{}
	written := map[string]bool{}
	for _, f := range doc.WriteFiles {
		if dir, unit := filepath.Split(f.Path); dir == "/etc/systemd/system/" {
			units[unit] = execStart(t, name, unit, f.Content)
			continue
		}
		mode, err := strconv.ParseUint(f.Permissions, 8, 32)
		if err != nil {
			t.Fatalf("%s: write_files %s has permissions %q", name, f.Path, f.Permissions)
		}
		writeFiles(t, map[string]string{f.Path: f.Content})
		if err := os.Chmod(f.Path, os.FileMode(mode)); err != nil {
			t.Fatal(err)
		}
		written[f.Path] = true
		if want, ok := o.Files[f.Path]; !ok || want != f.Content {
			t.Errorf("%s: cloud_init writes %s, which the files output has not (or otherwise)", name, f.Path)
		}
		if strings.HasSuffix(f.Path, "join-token") && mode != 0o600 {
			t.Errorf("%s: cloud_init writes the join token with mode %s, want 0600", name, f.Permissions)
		}
	}
	for p := range o.Files {
		if !written[p] {
			t.Errorf("%s: cloud_init does not write %s of the files output", name, p)
		}
	}
	var procs []*proc
	for _, cmd := range doc.RunCmd {
		switch {
		case len(cmd) >= 2 && cmd[0] == "install" && cmd[1] == "-d":
			if err := os.MkdirAll(cmd[len(cmd)-1], 0o700); err != nil {
				t.Fatal(err)
			}
		case len(cmd) == 4 && cmd[0] == "systemctl" && cmd[1] == "enable" && cmd[2] == "--now":
			argv, ok := units[cmd[3]]
			if !ok {
				t.Fatalf("%s: runcmd enables %s, which cloud_init does not write", name, cmd[3])
			}
			procs = append(procs, start(t, logDir, name+"-"+strings.TrimSuffix(cmd[3], ".service"), argv))
		}
	}
	if len(procs) != 2 {
		t.Fatalf("%s: cloud_init starts %d units, want the agent and the server: %v", name, len(procs), doc.RunCmd)
	}
	if got := procs[0].cmd.Args; strings.Join(got, " ") != strings.Join(o.AgentCommand, " ") {
		t.Errorf("%s: cloud_init's first unit runs %q, want agent_command %q", name, got, o.AgentCommand)
	}
	if got := procs[1].cmd.Args; strings.Join(got, " ") != strings.Join(o.ServerCommand, " ") {
		t.Errorf("%s: cloud_init's second unit runs %q, want server_command %q", name, got, o.ServerCommand)
	}
	return waitServing(t, o.AdminSocket, 120*time.Second, procs...)
}

// execStart is the argv of a systemd unit's ExecStart line, whose
// arguments are double-quoted with C escapes (JSON strings are a subset)
// and % and $ doubled.
func execStart(t *testing.T, name, unit, content string) []string {
	t.Helper()
	for _, line := range strings.Split(content, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !ok {
			continue
		}
		var argv []string
		dec := json.NewDecoder(strings.NewReader(rest))
		for dec.More() {
			var a string
			if err := dec.Decode(&a); err != nil {
				t.Fatalf("%s: %s's ExecStart %q is not a list of quoted arguments: %v", name, unit, rest, err)
			}
			argv = append(argv, strings.NewReplacer("%%", "%", "$$", "$").Replace(a))
		}
		return argv
	}
	t.Fatalf("%s: unit %s has no ExecStart", name, unit)
	return nil
}

// TestExampleTreeLifecycle applies terraform/examples/tree against a running
// root: the regions are registered at the root, started from the module
// outputs (region-a from its cloud_init document, region-b from its files
// and commands), their leaves registered once they serve, and leaf-a1
// started from its cloud_init gets its intermediate from region-a; a workload under leaf-a1
// gets an X509-SVID that verifies against the root's bundle. Plans after
// that (and after a forced CA rotation of the root) show no changes, an
// entry made by hand is imported with no diff, an entry deleted behind
// tofu's back is recreated, and destroy removes the regions' entries so
// that leaf-a1 can no longer renew its intermediate.
func TestExampleTreeLifecycle(t *testing.T) {
	needSetup(t)
	work := t.TempDir()
	tree := copyTree(t, work)
	dir := filepath.Join(tree, "examples", "tree")
	topo := filepath.Join(dir, "topology.hcl")
	release := testkit.LockExamplePorts(t, topo, 2*time.Minute)
	defer release()
	stateRoot := testkit.ShortDir(t)
	logDir := filepath.Join(work, "logs")
	os.MkdirAll(logDir, 0o755)
	uid := os.Getuid()
	e := &example{t: t, dir: dir, stateRoot: stateRoot, vars: []string{
		"-var", "state_root=" + stateRoot,
		"-var", "install_root=" + filepath.Join(work, "install"),
		"-var", "arbor_binary=" + arborBin,
		"-var", "run_as_uid=" + strconv.Itoa(uid),
	}}
	ctx := testkit.Context(t, 12*time.Minute)

	// The root runs before anything is applied (tofu registers the regions at it).
	rootProc := start(t, logDir, "root", []string{arborBin, "server", "--topology", topo, "--node", "root", "--var", "state_root=" + stateRoot})
	root := waitServing(t, filepath.Join(stateRoot, "root", "admin.sock"), 90*time.Second, rootProc)

	mustTofu(t, dir, 3*time.Minute, "init", "-input=false")
	e.apply(false)
	for _, region := range []string{"region-a", "region-b"} {
		if n := downstreamEntries(t, ctx, root, region); n != 1 {
			t.Fatalf("after the first apply the root holds %d downstream entries for %s, want 1", n, region)
		}
	}

	regionA, regionB := e.outputs()
	raAdmin := bootFromCloudInit(t, logDir, "region-a", regionA.tier())
	bootTier(t, logDir, "region-b", regionB.tier())

	// Second step: the regions serve, so their leaves are registered and
	// their entry blocks applied.
	e.apply(true)
	regionA, _ = e.outputs()
	leaf, ok := regionA.Leaves["leaf-a1"]
	if !ok || leaf == nil {
		t.Fatalf("region_a.leaves has no leaf-a1: %v", keys(regionA.Leaves))
	}
	if n := downstreamEntries(t, ctx, raAdmin, "leaf-a1"); n != 1 {
		t.Fatalf("region-a holds %d downstream entries for leaf-a1, want 1", n)
	}
	checkManifests(t, leaf.KubernetesManifests, "leaf-a1")
	leafAdmin := bootFromCloudInit(t, logDir, "leaf-a1", *leaf)

	// A workload under leaf-a1 gets an SVID whose chain reaches the root.
	rootBundle := x509Bundle(t, ctx, root)
	svid := workloadSVID(t, ctx, leafAdmin, leafListen(t, topo, stateRoot), rootBundle, uid)
	if len(svid.Certificates) < 3 {
		t.Errorf("the workload's chain has %d certificates, want the SVID, leaf-a1's CA and region-a's CA", len(svid.Certificates))
	}

	e.planNoChanges(true, "after the tree is up")

	// A forced CA rotation of the root changes its bundle; it is no diff.
	rotateX509CA(t, ctx, root)
	e.planNoChanges(true, "after the root's CA rotated")

	// An entry made by hand, imported, is no diff.
	hand, err := root.CreateEntry(ctx, &types.Entry{
		SpiffeId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: "/by-hand"},
		ParentId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: "/spire/server"},
		Selectors:   []*types.Selector{{Type: "unix", Value: "uid:4242"}},
		DnsNames:    []string{"by-hand.example.org"},
		X509SvidTtl: 1800,
	})
	if err != nil {
		t.Fatal(err)
	}
	handTF := `resource "arbor_entry" "by_hand" {
  provider      = arbor.root
  spiffe_id     = "spiffe://example.org/by-hand"
  parent_id     = "spiffe://example.org/spire/server"
  selectors     = ["unix:uid:4242"]
  dns_names     = ["by-hand.example.org"]
  x509_svid_ttl = "30m"
}
`
	if err := os.WriteFile(filepath.Join(dir, "by_hand.tf"), []byte(handTF), 0o644); err != nil {
		t.Fatal(err)
	}
	mustTofu(t, dir, 2*time.Minute, e.args("import", true, "arbor_entry.by_hand", hand.Id)...)
	// tofu import saves no output values, so the plan after it updates the
	// outputs; no resource may change.
	if changed := e.resourceChanges(true); len(changed) != 0 {
		t.Fatalf("tofu plan after importing an entry made by hand changes %v", changed)
	}
	e.apply(true)
	e.planNoChanges(true, "after importing an entry made by hand")

	// An entry of the root's entry blocks deleted behind tofu's back comes back.
	rootOut := e.rootOutputs()
	if len(rootOut.EntryIDs) == 0 {
		t.Fatal("the root tier's module output entry_ids is empty: the example's root has entry blocks")
	}
	var victim *types.Entry
	for _, id := range rootOut.EntryIDs {
		es, err := root.ListEntries(ctx, admin.EntryFilter{EntryID: id})
		if err != nil {
			t.Fatal(err)
		}
		victim = es[0]
		break
	}
	if err := root.DeleteEntries(ctx, admin.Printer{Out: &strings.Builder{}}, []string{victim.Id}); err != nil {
		t.Fatal(err)
	}
	r := tofu(t, dir, 3*time.Minute, e.args("plan", true, "-detailed-exitcode")...)
	if r.code != 2 || !strings.Contains(r.stdout, "1 to add") {
		t.Fatalf("tofu plan after deleting entry %s behind its back: want 1 to add (exit 2): %s", idString(victim.SpiffeId), r)
	}
	e.apply(true)
	if got := entriesFor(t, ctx, root, idString(victim.SpiffeId)); got != 1 {
		t.Fatalf("after apply the root holds %d entries for %s, want it recreated", got, idString(victim.SpiffeId))
	}
	e.planNoChanges(true, "after recreating the deleted entry")

	// Destroy removes the regions' registrations and their leaves': leaf-a1
	// can no longer renew its intermediate.
	mustTofu(t, dir, 5*time.Minute, e.args("destroy", true, "-auto-approve")...)
	for _, region := range []string{"region-a", "region-b"} {
		if n := downstreamEntries(t, ctx, root, region); n != 0 {
			t.Errorf("after destroy the root still holds %d downstream entries for %s", n, region)
		}
	}
	if n := downstreamEntries(t, ctx, raAdmin, "leaf-a1"); n != 0 {
		t.Errorf("after destroy region-a still holds %d downstream entries for leaf-a1", n)
	}
	if got := entriesFor(t, ctx, root, "spiffe://example.org/by-hand"); got != 0 {
		t.Errorf("after destroy the imported entry is still there")
	}
	// Nothing of the tree stays at the root or region-a: no entry (entry
	// blocks, downstream and join-token alias entries), no agent.
	for name, c := range map[string]*admin.Client{"the root": root, "region-a": raAdmin} {
		if es, err := c.ListEntries(ctx, admin.EntryFilter{}); err != nil || len(es) != 0 {
			t.Errorf("after destroy %s holds %d entries (%v): %v", name, len(es), err, es)
		}
		if ags, err := c.ListAgents(ctx, admin.AgentFilter{}); err != nil || len(ags) != 0 {
			t.Errorf("after destroy %s still has %d attested agents (%v)", name, len(ags), err)
		}
	}
	err = testkit.PollErr(90*time.Second, "leaf-a1 refused a new intermediate", func() error {
		la := localauthorityv1.NewLocalAuthorityClient(leafAdmin.Conn())
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := la.PrepareX509Authority(cctx, &localauthorityv1.PrepareX509AuthorityRequest{}); err == nil {
			return fmt.Errorf("leaf-a1 still prepared a new X.509 authority from region-a")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func idString(p *types.SPIFFEID) string { return "spiffe://" + p.TrustDomain + p.Path }

// downstreamEntries counts the downstream entries c holds for server name
// of the example (its SPIFFE ID ends in /name).
func downstreamEntries(t *testing.T, ctx context.Context, c *admin.Client, name string) int {
	t.Helper()
	es, err := c.ListEntries(ctx, admin.EntryFilter{Downstream: true})
	if err != nil {
		t.Fatalf("listing downstream entries on %s: %v", c.Endpoint(), err)
	}
	n := 0
	for _, en := range es {
		if strings.HasSuffix(en.SpiffeId.Path, "/"+name) {
			n++
		}
	}
	return n
}

func entriesFor(t *testing.T, ctx context.Context, c *admin.Client, id string) int {
	t.Helper()
	es, err := c.ListEntries(ctx, admin.EntryFilter{SPIFFEID: id})
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func x509Bundle(t *testing.T, ctx context.Context, c *admin.Client) *x509bundle.Bundle {
	t.Helper()
	b, err := c.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := x509bundle.New(td)
	for _, a := range b.X509Authorities {
		cert, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		out.AddX509Authority(cert)
	}
	return out
}

// rotateX509CA prepares a new X.509 authority on c and activates it.
func rotateX509CA(t *testing.T, ctx context.Context, c *admin.Client) {
	t.Helper()
	la := localauthorityv1.NewLocalAuthorityClient(c.Conn())
	p, err := la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{})
	if err != nil {
		t.Fatalf("PrepareX509Authority: %v", err)
	}
	if _, err := la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: p.PreparedAuthority.AuthorityId}); err != nil {
		t.Fatalf("ActivateX509Authority: %v", err)
	}
}

// leafListen is leaf-a1's agent API address from the example topology.
func leafListen(t *testing.T, topo, stateRoot string) string {
	t.Helper()
	out, err := execOutput(arborBin, "topology", "render", topo, "--node", "leaf-a1", "--format", "json", "--var", "state_root="+stateRoot)
	if err != nil {
		t.Fatalf("arbor topology render: %v\n%s", err, out)
	}
	var cfg struct {
		Server map[string]struct {
			Address string `json:"address"`
		} `json:"server"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil || cfg.Server["leaf-a1"].Address == "" {
		t.Fatalf("no server.leaf-a1.address in the render of leaf-a1 (%v):\n%s", err, out)
	}
	return cfg.Server["leaf-a1"].Address
}

// workloadSVID runs an agent for workloads of leaf-a1 (attested with a join
// token the test makes there), registers this process's uid under it and
// returns the X509-SVID a go-spiffe client gets, verified against bundle.
func workloadSVID(t *testing.T, ctx context.Context, leaf *admin.Client, addr string, bundle *x509bundle.Bundle, uid int) *x509svid.SVID {
	t.Helper()
	agentID := spiffeid.RequireFromPath(td, "/leaf-a1/workers")
	token, err := leaf.CreateJoinToken(ctx, agentID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wl := spiffeid.RequireFromPath(td, "/leaf-a1/web")
	if _, err := leaf.CreateEntry(ctx, &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: wl.Path()},
		ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: agentID.Path()},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(uid)}},
	}); err != nil {
		t.Fatal(err)
	}
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := testkit.ShortDir(t)
	testkit.StartAgent(t, agent.Config{
		TrustDomain: td, ServerAddress: addr, TrustBundle: bundle.X509Authorities(),
		DataDir: filepath.Join(dir, "agent"), SocketPath: filepath.Join(dir, "api.sock"),
		JoinToken: token, SyncInterval: 500 * time.Millisecond,
		WorkloadAttestors: []agent.WorkloadAttestor{att},
	}, 60*time.Second)
	var svid *x509svid.SVID
	err = testkit.PollErr(60*time.Second, "the workload's X509-SVID", func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := workloadapi.FetchX509SVID(cctx, workloadapi.WithAddr("unix://"+filepath.Join(dir, "api.sock")))
		if err != nil {
			return err
		}
		if s.ID != wl {
			return fmt.Errorf("got %s, want %s", s.ID, wl)
		}
		svid = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("the workload's X509-SVID does not verify against the root's bundle: %v", err)
	}
	return svid
}

// checkManifests decodes a leaf's Kubernetes manifests with client-go's
// scheme (what kubectl apply would accept) and checks that they run the
// leaf's server and co-located agent from the topology in the ConfigMap.
func checkManifests(t *testing.T, yamlDocs, leaf string) {
	t.Helper()
	kinds := map[string]int{}
	var sts *appsv1.StatefulSet
	var cm *corev1.ConfigMap
	for i, doc := range strings.Split(yamlDocs, "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s's kubernetes_manifests document %d does not decode as a Kubernetes object: %v\n%s", leaf, i, err, doc)
		}
		kinds[gvk.Kind]++
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			sts = o
		case *corev1.ConfigMap:
			cm = o
		}
	}
	for _, k := range []string{"Namespace", "ConfigMap", "Secret", "StatefulSet", "Service"} {
		if kinds[k] == 0 {
			t.Errorf("%s's kubernetes_manifests have no %s (kinds: %v)", leaf, k, kinds)
		}
	}
	if sts == nil || cm == nil {
		t.FailNow()
	}
	topoInCM := false
	for _, v := range cm.Data {
		if strings.Contains(v, `server "`+leaf+`"`) {
			topoInCM = true
		}
	}
	if !topoInCM {
		t.Errorf("%s's ConfigMap does not hold the topology file with its server block", leaf)
	}
	var server, agent bool
	for _, c := range sts.Spec.Template.Spec.Containers {
		argv := strings.Join(append(append([]string{}, c.Command...), c.Args...), " ")
		server = server || strings.Contains(argv, "server --topology") && strings.Contains(argv, "--node "+leaf)
		agent = agent || strings.Contains(argv, "agent run --topology") && strings.Contains(argv, "--node "+leaf)
	}
	if !server || !agent {
		t.Errorf("%s's StatefulSet does not run both `arbor server --node %s` and `arbor agent run --node %s`: %+v", leaf, leaf, leaf, sts.Spec.Template.Spec.Containers)
	}
}
