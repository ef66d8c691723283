package tree

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/root"
	"github.com/arborid/arbor/upstream"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const (
	// syncEvery is every downstream tier's ParentBundleSyncInterval and
	// every agent's sync interval.
	syncEvery = 200 * time.Millisecond
	// jwtKeyLife is every tier's CA TTL, which is the lifetime of its JWT
	// signing keys: a key is prepared (and published) at half of it and
	// activated when a sixth remains.
	jwtKeyLife = time.Hour
	// x509Life is the lifetime of every tier's X.509 CA. The tests move a
	// tier's clock up to a few JWT key lifetimes ahead for one rotation
	// step; with this lifetime such a jump never rotates the X.509 CA.
	x509Life = 1000 * time.Hour
	// svidTTL is every tier's X509-SVID TTL, so also its TLS server
	// certificate's: renewed at half of it, so never during a clock jump
	// (a certificate issued at a jumped time would be "not yet valid" for
	// every peer checking it at the real time).
	svidTTL = 24 * time.Hour
)

// testLogger logs to stderr when TREE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TREE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// clock is one tier's clock: the real time plus an offset the test sets.
type clock = testkit.Clock

// shortDir is a temporary directory with a short path, for Unix sockets.
func shortDir(t testing.TB) string { return testkit.ShortDir(t) }

// ctxFor is a context bounded by d and ended at the test's cleanup.
func ctxFor(t testing.TB, d time.Duration) context.Context { return testkit.Context(t, d) }

func callCtx(t testing.TB) context.Context { return ctxFor(t, 30*time.Second) }

func idOf(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

func protoID(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// longRoot is the root tier's upstream: a self-signed CA valid for
// x509Life whatever the CA manager asks for, dated by the real clock.
type longRoot struct{ root.SelfSigned }

var _ upstream.Authority = (*longRoot)(nil)

func (r *longRoot) MintX509CA(ctx context.Context, key crypto.Signer, _ time.Duration) (*upstream.MintedCA, error) {
	return r.SelfSigned.MintX509CA(ctx, key, x509Life)
}

// childUpstream is a downstream tier's upstream. JWT keys go to the parent
// over the wire exactly as in production — PublishJWTAuthority, synchronous
// up to the root, and the parent's bundle pulled with GetBundle every
// syncEvery — which is what these tests are about. Only the X.509 CA is
// signed in process by the parent's CA manager, for x509Life, so that moving
// this tier's clock to a JWT rotation point never rotates its X.509 CA (the
// API would cap the intermediate at the parent's CA TTL, the same as the JWT
// key lifetime).
type childUpstream struct {
	*downstream.Upstream
	parent *ca.Manager
	roots  []*x509.Certificate
}

var (
	_ upstream.Authority    = (*childUpstream)(nil)
	_ upstream.JWTPublisher = (*childUpstream)(nil)
)

func (u *childUpstream) MintX509CA(ctx context.Context, key crypto.Signer, _ time.Duration) (*upstream.MintedCA, error) {
	chain, err := u.parent.SignDownstreamX509CA(ctx, key.Public(), x509Life)
	if err != nil {
		return nil, err
	}
	return &upstream.MintedCA{Cert: chain[0], Intermediates: chain[1:], Roots: u.roots}, nil
}

// staticSource serves one SVID and one bundle, as a co-located agent's
// Workload API would.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle, nil
}

// tier is one running in-process arbor server with its own clock.
type tier struct {
	t      *testing.T
	name   string
	depth  int // 0 for the root
	parent *tier
	clock  *clock
	srv    *server.Server
	admin  *grpc.ClientConn
	addr   string
}

// startTier starts a server: the root when parent is nil, otherwise a
// downstream tier authenticated to parent by the SVID of a downstream entry.
func startTier(t *testing.T, name string, parent *tier) *tier {
	t.Helper()
	dir := shortDir(t)
	tr := &tier{t: t, name: name, parent: parent, clock: &clock{}}
	cfg := server.Config{
		Name:           name,
		TrustDomain:    td,
		ListenAddr:     "127.0.0.1:0",
		AdminSocket:    filepath.Join(dir, "admin.sock"),
		StateDir:       filepath.Join(dir, "state"),
		JoinToken:      true,
		CATTL:          jwtKeyLife,
		X509SVIDTTL:    svidTTL,
		CAKeysInMemory: true,
		Logger:         testLogger(),
		Now:            tr.clock.Now,
	}
	if parent == nil {
		cfg.Upstream = &longRoot{root.SelfSigned{TrustDomain: td}}
	} else {
		tr.depth = parent.depth + 1
		cfg.Parent = parent.downstreamFor(name)
		cfg.ParentBundleSyncInterval = syncEvery
	}

	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("%s: server.New: %v", name, err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatalf("%s: Listen: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: server Run: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: server did not stop within 30s", name)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("%s: server stopped before ready: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: server not ready after 30s", name)
	}
	conn, err := grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tr.srv, tr.admin, tr.addr = srv, conn, srv.AgentAddr().String()
	return tr
}

// rootCerts is the root tier's X.509 CA, the trust anchor of the tree.
func (tr *tier) rootCerts() []*x509.Certificate {
	for tr.parent != nil {
		tr = tr.parent
	}
	c, _ := tr.srv.CA().X509CA()
	return []*x509.Certificate{c}
}

// downstreamFor registers child as a downstream tier of tr (an entry with
// downstream = true), signs its SVID and returns the child's upstream.
func (tr *tier) downstreamFor(child string) *childUpstream {
	t := tr.t
	t.Helper()
	id := idOf("/tier/" + child)
	tr.createEntry(&types.Entry{
		ParentId:   protoID(idOf("/host/" + child)),
		SpiffeId:   protoID(id),
		Selectors:  []*types.Selector{{Type: "unix", Value: "uid:0"}},
		Downstream: true,
	})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := tr.srv.CA().SignX509SVID(callCtx(t), ca.X509SVIDParams{ID: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatalf("%s: signing %s's SVID: %v", tr.name, id, err)
	}
	roots := tr.rootCerts()
	up, err := downstream.New(callCtx(t), downstream.Config{
		TrustDomain:   td,
		ParentAddress: tr.addr,
		Source:        staticSource{svid: &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, bundle: x509bundle.FromX509Authorities(td, roots)},
		CallTimeout:   10 * time.Second,
		Logger:        testLogger(),
	})
	if err != nil {
		t.Fatalf("downstream.New for %s: %v", child, err)
	}
	t.Cleanup(func() { up.Close() })
	return &childUpstream{Upstream: up, parent: tr.srv.CA(), roots: roots}
}

func (tr *tier) createEntry(e *types.Entry) string {
	tr.t.Helper()
	resp, err := entryv1.NewEntryClient(tr.admin).BatchCreateEntry(callCtx(tr.t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		tr.t.Fatalf("%s: BatchCreateEntry: %v", tr.name, err)
	}
	if r := resp.Results[0]; r.Status.Code != 0 {
		tr.t.Fatalf("%s: BatchCreateEntry: %v", tr.name, r.Status)
	}
	return resp.Results[0].Entry.Id
}

// bundle is the tier's bundle as its admin API serves it.
func (tr *tier) bundle(ctx context.Context) (*types.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := bundlev1.NewBundleClient(tr.admin).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s: GetBundle: %w", tr.name, err)
	}
	return b, nil
}

// jwtBundle is the tier's bundle's JWT authorities as a go-spiffe bundle.
func (tr *tier) jwtBundle(ctx context.Context) (*jwtbundle.Bundle, error) {
	b, err := tr.bundle(ctx)
	if err != nil {
		return nil, err
	}
	jb := jwtbundle.New(td)
	for _, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%s: JWT authority %s: %w", tr.name, k.KeyId, err)
		}
		jb.AddJWTAuthority(k.KeyId, pub)
	}
	return jb, nil
}

// rotateAt runs one rotation step of the tier's CA manager with the tier's
// clock at `at`, then puts the clock back to the real time. The server's own
// rotation loop (every 10s) may run a step meanwhile; it does the same.
func (tr *tier) rotateAt(ctx context.Context, at time.Time) error {
	tr.clock.JumpTo(at)
	defer tr.clock.Reset()
	return tr.srv.CA().Rotate(ctx)
}

// constAttestor gives every Workload API caller the same selectors: each
// agent of these tests serves one workload, the test process.
type constAttestor []selector.Selector

func (c constAttestor) Attest(context.Context, int32) ([]selector.Selector, error) { return c, nil }

var _ agent.WorkloadAttestor = constAttestor(nil)

// workload is /workload/<name>, registered on a tier and served by its own
// in-process arbor agent attested to that tier with a join token.
type workload struct {
	id     spiffeid.ID
	tier   *tier
	client *workloadapi.Client
}

func startWorkload(t *testing.T, tr *tier, name string) *workload {
	t.Helper()
	jt, err := agentv1.NewAgentClient(tr.admin).CreateJoinToken(callCtx(t), &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		t.Fatalf("%s: CreateJoinToken: %v", tr.name, err)
	}
	id := idOf("/workload/" + name)
	sel := selector.Selector{Type: "wl", Value: name}
	tr.createEntry(&types.Entry{
		ParentId:  protoID(idOf("/spire/agent/join_token/" + jt.Value)),
		SpiffeId:  protoID(id),
		Selectors: []*types.Selector{{Type: sel.Type, Value: sel.Value}},
	})
	dir := shortDir(t)
	cfg := agent.Config{
		TrustDomain:       td,
		ServerAddress:     tr.addr,
		TrustBundle:       tr.rootCerts(),
		DataDir:           filepath.Join(dir, "data"),
		SocketPath:        filepath.Join(dir, "api.sock"),
		JoinToken:         jt.Value,
		SyncInterval:      syncEvery,
		WorkloadAttestors: []agent.WorkloadAttestor{constAttestor{sel}},
		Logger:            testLogger(),
	}
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("agent of %s did not stop within 30s", tr.name)
		}
	})
	select {
	case <-ag.Ready():
	case err := <-done:
		t.Fatalf("agent of %s stopped before ready: %v", tr.name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("agent of %s not ready after 30s", tr.name)
	}
	c, err := workloadapi.New(callCtx(t), workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatalf("workloadapi.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &workload{id: id, tier: tr, client: c}
}

// tree is a root, regional tiers under it and a leaf under each regional.
type tree struct {
	root      *tier
	regionals []*tier
	leaves    []*tier
	all       []*tier // root, regionals, leaves
}

func startTree(t *testing.T, regionals int) *tree {
	t.Helper()
	tr := &tree{root: startTier(t, "root", nil)}
	tr.all = append(tr.all, tr.root)
	for i := range regionals {
		r := startTier(t, fmt.Sprintf("region-%d", i), tr.root)
		tr.regionals = append(tr.regionals, r)
	}
	for i, r := range tr.regionals {
		tr.leaves = append(tr.leaves, startTier(t, fmt.Sprintf("leaf-%d", i), r))
	}
	tr.all = append(append(tr.all, tr.regionals...), tr.leaves...)
	return tr
}
