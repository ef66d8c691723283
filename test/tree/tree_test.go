package tree

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/testkit"
)

var td = spiffeid.RequireTrustDomainFromString("tree.test")

// bundleSync is how often a downstream server pulls its parent's bundle
// (server.Config.ParentBundleSyncInterval's default; the topology file does
// not set it): a key published at the root reaches a leaf within two of them.
const bundleSync = 10 * time.Second

// convergeGiveUp bounds every wait for a change to reach every tier: two
// hops of bundleSync and a generous slack for a loaded machine.
const convergeGiveUp = 2*bundleSync + 60*time.Second

// TestTree runs the generated tree under arbor up and checks that every
// leaf serves, that a workload under a leaf gets an SVID chaining to the
// root, that JWT keys rotated at the root and at a regional server reach
// every tier, and that every tier's bundle stays bounded as keys rotate and
// servers restart. ARBOR_TREE=RxL selects the size; the numbers are logged.
func TestTree(t *testing.T) {
	if setupErr != nil {
		t.Fatalf("building arbor: %v", setupErr)
	}
	sz := treeSize(t)
	rounds := 2
	if sz.servers() > 20 {
		rounds = 3
	}
	ctx := testkit.Context(t, 5*time.Minute+time.Duration(sz.servers())*10*time.Second)
	tr := writeTopology(t, testkit.ShortDir(t), sz)
	t.Logf("tree: root + %d regional + %d leaves = %d servers, %d co-located agents (arbor up --no-demo)",
		sz.regions, sz.regions*sz.leaves, sz.servers(), sz.servers()-1)

	tr.start(t)
	tr.waitLeaves(t, ctx)
	tr.logMemory(t)

	w := startWorkload(t, ctx, tr, tr.leaves()[len(tr.leaves())-1])
	w.checkX509(t, ctx, tr)
	before := tr.waitBounded(t, ctx, time.Now(), "after start-up")
	tr.logBundles(t, "after start-up", before)

	// Each round prepares a JWT key at the root and at a regional server,
	// restarts the root, another regional server and a leaf, activates the
	// new keys once every tier holds them and retires the old ones. The
	// first round measures how long the prepared keys take to reach every
	// tier, before its restarts.
	root := tr.nodes[0]
	for i := range rounds {
		began := time.Now()
		region := tr.byName(sz.regionName((sz.regions - 1 + i) % sz.regions))
		rs := []rotation{tr.prepare(t, ctx, root), tr.prepare(t, ctx, region)}
		if i == 0 {
			tr.waitPrepared(t, ctx, rs, true)
		}
		for _, name := range []string{"root", sz.regionName(i % sz.regions), sz.leafName((i+1)%sz.regions, i%sz.leaves)} {
			if err := tr.upCtl(ctx, "stop", name); err != nil {
				t.Fatal(err)
			}
			if err := tr.upCtl(ctx, "start", name); err != nil {
				t.Fatal(err)
			}
		}
		// A prepared key is activated once every tier holds it.
		tr.waitPrepared(t, ctx, rs, false)
		for _, r := range rs {
			tr.activate(t, ctx, r)
		}
		if i == 0 {
			// The leaf's workload gets JWT-SVIDs from its tier's key, which
			// the root holds: they validate against the root's bundle.
			w.checkJWT(t, ctx, tr)
		}
		tr.retire(t, ctx, rs)
		got := tr.waitBounded(t, ctx, time.Now(), fmt.Sprintf("round %d", i+1))
		tr.logBundles(t, fmt.Sprintf("after round %d (%d rotations, %d restarts so far; round took %v)", i+1, 2*(i+1), 3*(i+1), time.Since(began).Round(100*time.Millisecond)), got)
		for j := range got {
			if got[j].keys > before[j].keys || got[j].bytes > before[j].bytes+before[j].bytes/10 {
				t.Errorf("round %d: %s's bundle grew: %d JWT keys, %d bytes; after start-up %d keys, %d bytes",
					i+1, tr.nodes[j].name, got[j].keys, got[j].bytes, before[j].keys, before[j].bytes)
			}
		}
	}
	w.checkX509(t, ctx, tr)
	w.checkJWT(t, ctx, tr)
}

// waitPrepared waits until every tier's bundle holds every key of rs; with
// report it logs when each got there, from its prepare call.
func (tr *tree) waitPrepared(t *testing.T, ctx context.Context, rs []rotation, report bool) {
	t.Helper()
	seen := make([]time.Duration, len(rs))
	start := time.Now()
	tr.waitBundles(t, ctx, start, convergeGiveUp, "prepared JWT keys", func(_ *node, b *types.Bundle) error {
		for _, r := range rs {
			if !slices.Contains(jwtKIDs(b), r.kid) {
				return fmt.Errorf("lacks %s (prepared at %s)", r.kid, r.at.name)
			}
		}
		return nil
	}, func(bs []*types.Bundle) {
		for k, r := range rs {
			if seen[k] != 0 {
				continue
			}
			all := true
			for _, b := range bs {
				all = all && slices.Contains(jwtKIDs(b), r.kid)
			}
			if all {
				seen[k] = time.Since(r.began)
			}
		}
	})
	if report {
		for k, r := range rs {
			t.Logf("JWT key prepared at %s: in all %d bundles after %v", r.at.name, len(tr.nodes), seen[k].Round(10*time.Millisecond))
		}
	}
}

// waitLeaves waits until every leaf serves (its intermediate CA held, its
// admin API answering) and arbor up says the tree is ready; it logs when.
func (tr *tree) waitLeaves(t *testing.T, ctx context.Context) {
	t.Helper()
	leaves := tr.leaves()
	served := map[string]time.Duration{}
	for len(served) < len(leaves) {
		if out, done := tr.exited(); done {
			t.Fatalf("arbor up exited while starting the tree:\n%s", lastLines(out, 60))
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d leaves serve when the test's time ran out", len(served), len(leaves))
		}
		for _, n := range leaves {
			if _, ok := served[n.name]; ok {
				continue
			}
			if n.serves(ctx) == nil {
				served[n.name] = time.Since(tr.began)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	times := make([]time.Duration, 0, len(served))
	for _, d := range served {
		times = append(times, d)
	}
	slices.Sort(times)
	var ready time.Duration
	for !strings.Contains(tr.out.String(), "\nready;") {
		if out, done := tr.exited(); done {
			t.Fatalf("arbor up exited before ready:\n%s", lastLines(out, 60))
		}
		if ctx.Err() != nil {
			t.Fatal("arbor up not ready when the test's time ran out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ready = time.Since(tr.began)
	for _, n := range tr.nodes {
		if err := n.serves(ctx); err != nil {
			t.Fatalf("%s does not serve once arbor up is ready: %v", n.name, err)
		}
	}
	t.Logf("start-up: first leaf served after %v, median %v, every leaf after %v; arbor up ready after %v (%.2f s per server)",
		times[0].Round(10*time.Millisecond), times[len(times)/2].Round(10*time.Millisecond), times[len(times)-1].Round(10*time.Millisecond),
		ready.Round(10*time.Millisecond), ready.Seconds()/float64(len(tr.nodes)))
}

// logMemory logs the memory of every server and co-located agent, grouped
// by tier: resident set, its anonymous part and the proportional set.
func (tr *tree) logMemory(t *testing.T) {
	t.Helper()
	depth := map[string]int{}
	for _, n := range tr.nodes {
		depth[n.name] = n.depth
	}
	groups := map[string][]mem{}
	var total mem
	for _, p := range tr.processes(t) {
		key := []string{"root", "regional", "leaf"}[depth[p.node]] + " " + p.kind
		groups[key] = append(groups[key], p.mem)
		total.rss, total.anon, total.pss = total.rss+p.rss, total.anon+p.anon, total.pss+p.pss
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	n := 0
	for _, k := range keys {
		g := groups[k]
		var sum mem
		var maxRSS int64
		for _, m := range g {
			sum.rss, sum.anon, sum.pss = sum.rss+m.rss, sum.anon+m.anon, sum.pss+m.pss
			maxRSS = max(maxRSS, m.rss)
		}
		c := int64(len(g))
		n += len(g)
		t.Logf("memory %-16s %3d processes, mean: RSS %5.1f MiB (max %5.1f), anonymous %5.1f MiB, PSS %5.1f MiB",
			k, len(g), mib(sum.rss/c), mib(maxRSS), mib(sum.anon/c), mib(sum.pss/c))
	}
	up := memOf(tr.up.Process.Pid)
	t.Logf("memory total of %d processes: RSS %.0f MiB, anonymous %.0f MiB, PSS %.0f MiB (arbor up itself: RSS %.1f MiB, anonymous %.1f MiB)",
		n, mib(total.rss), mib(total.anon), mib(total.pss), mib(up.rss), mib(up.anon))
	if want := 2*len(tr.nodes) - 1; n != want {
		t.Errorf("found %d server and agent processes under arbor up, want %d", n, want)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// rotation is a JWT key prepared at a tier, and the key it replaces.
type rotation struct {
	at     *node
	kid    string // prepared
	active string // active when it was prepared: old once it is activated
	began  time.Time
}

func (tr *tree) prepare(t *testing.T, ctx context.Context, n *node) rotation {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := n.la.GetJWTAuthorityState(cctx, &localauthorityv1.GetJWTAuthorityStateRequest{})
	if err != nil {
		t.Fatalf("%s: jwt authority state: %v", n.name, err)
	}
	r := rotation{at: n, active: st.Active.AuthorityId, began: time.Now()}
	resp, err := n.la.PrepareJWTAuthority(cctx, &localauthorityv1.PrepareJWTAuthorityRequest{})
	if err != nil {
		t.Fatalf("%s: prepare JWT authority: %v", n.name, err)
	}
	r.kid = resp.PreparedAuthority.AuthorityId
	return r
}

func (tr *tree) activate(t *testing.T, ctx context.Context, r rotation) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := r.at.la.ActivateJWTAuthority(cctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: r.kid}); err != nil {
		t.Fatalf("%s: activate JWT authority %s: %v", r.at.name, r.kid, err)
	}
}

// retire takes the keys rs replaced out of the tree, as docs/operations.md
// says: taint each at its tier (which taints it at the parents up to the
// root), wait until every tier holds it tainted, revoke it at the root,
// whose bundle every tier follows, and then, for a downstream tier, at that
// tier too once its parent no longer lists it (before, the tier refuses:
// its next bundle sync would bring it back).
func (tr *tree) retire(t *testing.T, ctx context.Context, rs []rotation) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 2*convergeGiveUp)
	defer cancel()
	for _, r := range rs {
		if _, err := r.at.la.TaintJWTAuthority(cctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: r.active}); err != nil {
			t.Fatalf("%s: taint JWT authority %s: %v", r.at.name, r.active, err)
		}
	}
	tr.waitBundles(t, cctx, time.Now(), convergeGiveUp, "tainted JWT keys", func(_ *node, b *types.Bundle) error {
		for _, r := range rs {
			for _, k := range b.JwtAuthorities {
				if k.KeyId == r.active && !k.Tainted {
					return fmt.Errorf("holds %s (of %s) untainted", r.active, r.at.name)
				}
			}
		}
		return nil
	}, nil)
	for _, r := range rs {
		if _, err := tr.nodes[0].la.RevokeJWTAuthority(cctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: r.active}); err != nil {
			t.Fatalf("root: revoke JWT authority %s of %s: %v", r.active, r.at.name, err)
		}
	}
	for _, r := range rs {
		for r.at.depth > 0 {
			_, err := r.at.la.RevokeJWTAuthority(cctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: r.active})
			if err == nil {
				break
			}
			if status.Code(err) != codes.FailedPrecondition || cctx.Err() != nil {
				t.Fatalf("%s: revoke its JWT authority %s once the root revoked it: %v", r.at.name, r.active, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// tierBundle is one tier's bundle size.
type tierBundle struct{ keys, x509, bytes int }

// waitBounded waits until every tier's bundle holds exactly the JWT keys
// the tiers' authority states name (each tier's active, prepared and old
// key) and one X.509 authority (the root's: nothing rotates it here), and
// returns the sizes. A key a restart minted without retiring the one
// before, or a retired key left behind, keeps them apart: the bound is
// three keys per tier, however many rotations and restarts came before.
func (tr *tree) waitBounded(t *testing.T, ctx context.Context, start time.Time, what string) []tierBundle {
	t.Helper()
	var want []string
	var last error
	for time.Since(start) < convergeGiveUp && ctx.Err() == nil {
		states, err := tr.jwtStates(ctx)
		if err != nil {
			last = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		want = want[:0]
		for _, st := range states {
			for _, a := range []*localauthorityv1.AuthorityState{st.Active, st.Prepared, st.Old} {
				if a != nil {
					want = append(want, a.AuthorityId)
				}
			}
		}
		slices.Sort(want)
		bs, err := tr.bundles(ctx)
		if err != nil {
			last = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		out := make([]tierBundle, len(bs))
		var errs []string
		for i, b := range bs {
			got := jwtKIDs(b)
			out[i] = tierBundle{keys: len(got), x509: len(b.X509Authorities), bytes: bundleBytes(b)}
			switch {
			case !slices.Equal(got, want):
				errs = append(errs, fmt.Sprintf("%s: %d JWT keys, want the %d the tiers hold (extra %v, missing %v)",
					tr.nodes[i].name, len(got), len(want), minus(got, want), minus(want, got)))
			case len(b.X509Authorities) != 1:
				errs = append(errs, fmt.Sprintf("%s: %d X.509 authorities, want 1", tr.nodes[i].name, len(b.X509Authorities)))
			}
		}
		if len(errs) == 0 {
			if max := 3 * len(tr.nodes); len(want) > max {
				t.Fatalf("%s: the tiers hold %d JWT keys, more than 3 per tier (%d)", what, len(want), max)
			}
			return out
		}
		last = fmt.Errorf("%s", strings.Join(errs, "\n"))
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: bundles not bounded by the tiers' keys after %v: %v", what, convergeGiveUp, firstLines(last, 5))
	return nil
}

// minus is what a holds that b does not.
func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func (tr *tree) logBundles(t *testing.T, what string, bs []tierBundle) {
	t.Helper()
	names := []string{"root", "regional", "leaf"}
	for d := range 3 {
		var keys, bytes []int
		for i, n := range tr.nodes {
			if n.depth == d {
				keys, bytes = append(keys, bs[i].keys), append(bytes, bs[i].bytes)
			}
		}
		if len(keys) == 0 {
			continue
		}
		t.Logf("bundles %s, %s tier: JWT keys %d-%d, bytes %d-%d", what, names[d], slices.Min(keys), slices.Max(keys), slices.Min(bytes), slices.Max(bytes))
	}
}

// workload is a go-spiffe client of an in-process agent attested to a
// leaf with a join token, registered there for this process's uid.
type workload struct {
	leaf   *node
	id     spiffeid.ID
	client *workloadapi.Client
}

func startWorkload(t *testing.T, ctx context.Context, tr *tree, leaf *node) *workload {
	t.Helper()
	nodeID := spiffeid.RequireFromPath(td, "/tree-node/"+leaf.name)
	id := spiffeid.RequireFromPath(td, "/tree-workload/"+leaf.name)
	token, err := leaf.admin.CreateJoinToken(ctx, nodeID, 10*time.Minute)
	if err != nil {
		t.Fatalf("%s: join token: %v", leaf.name, err)
	}
	if _, err := leaf.admin.CreateEntry(ctx, &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
		ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: nodeID.Path()},
		Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}},
	}); err != nil {
		t.Fatalf("%s: workload entry: %v", leaf.name, err)
	}
	b, err := leaf.admin.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var roots []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	ua, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := testkit.ShortDir(t)
	sock := filepath.Join(dir, "api.sock")
	testkit.StartAgent(t, agent.Config{
		TrustDomain:       td,
		ServerAddress:     leaf.addr,
		TrustBundle:       roots,
		DataDir:           filepath.Join(dir, "data"),
		SocketPath:        sock,
		JoinToken:         token,
		SyncInterval:      time.Second,
		WorkloadAttestors: []agent.WorkloadAttestor{ua},
	}, 60*time.Second)
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &workload{leaf: leaf, id: id, client: c}
}

// rootBundles is the root tier's bundle as go-spiffe sources.
func rootBundles(t *testing.T, ctx context.Context, tr *tree) (*x509bundle.Bundle, *jwtbundle.Bundle) {
	t.Helper()
	b, err := tr.nodes[0].admin.Bundle(ctx)
	if err != nil {
		t.Fatalf("root bundle: %v", err)
	}
	xb, jb := x509bundle.New(td), jwtbundle.New(td)
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		xb.AddX509Authority(c)
	}
	for _, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := jb.AddJWTAuthority(k.KeyId, pub); err != nil {
			t.Fatal(err)
		}
	}
	return xb, jb
}

// checkX509 waits for the workload's X509-SVID and verifies it against the
// root tier's bundle: leaf SVID, the leaf's CA, the regional CA, the root.
func (w *workload) checkX509(t *testing.T, ctx context.Context, tr *tree) {
	t.Helper()
	xb, _ := rootBundles(t, ctx, tr)
	testkit.Poll(t, 60*time.Second, "X509-SVID of "+w.id.String()+" chaining to the root", func() error {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		svid, err := w.client.FetchX509SVID(fctx)
		if err != nil {
			return err
		}
		if svid.ID != w.id {
			return fmt.Errorf("got %s, want %s", svid.ID, w.id)
		}
		_, chains, err := x509svid.Verify(svid.Certificates, xb)
		if err != nil {
			return err
		}
		if len(chains[0]) != 4 {
			return fmt.Errorf("chain of %d certificates, want 4 (SVID, leaf CA, regional CA, root)", len(chains[0]))
		}
		return nil
	})
}

// checkJWT fetches a JWT-SVID from the workload's agent and validates it
// against the root tier's bundle: the leaf's key travelled up to the root.
func (w *workload) checkJWT(t *testing.T, ctx context.Context, tr *tree) {
	t.Helper()
	testkit.Poll(t, convergeGiveUp, "JWT-SVID of "+w.id.String()+" valid against the root's bundle", func() error {
		_, jb := rootBundles(t, ctx, tr)
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		svid, err := w.client.FetchJWTSVID(fctx, jwtsvid.Params{Audience: "tree-test"})
		if err != nil {
			return err
		}
		_, err = jwtsvid.ParseAndValidate(svid.Marshal(), jb, []string{"tree-test"})
		return err
	})
}
