package nested

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// rotateEvery drives the CA managers' rotation steps. server.Config has no
// rotation interval (the CA manager's default tick is 10s), which is too
// coarse for CA lifetimes of tens of seconds, so every tier also gets a
// goroutine calling its CA manager's exported Rotate at this period.
const rotateEvery = 250 * time.Millisecond

// syncEvery is the agents' sync interval and the downstream tiers' parent
// bundle sync interval.
const syncEvery = 200 * time.Millisecond

// testLogger logs to stderr when NESTED_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("NESTED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// shortDir is a temporary directory with a short path, for Unix sockets.
func shortDir(t testing.TB) string { return testkit.ShortDir(t) }

// ctxFor is a context bounded by d and ended at the test's cleanup.
func ctxFor(t testing.TB, d time.Duration) context.Context { return testkit.Context(t, d) }

func callCtx(t testing.TB) context.Context { return ctxFor(t, 30*time.Second) }

// poll calls try until it returns nil, or fails the test when timeout
// passes.
func poll(t testing.TB, timeout time.Duration, what string, try func() error) {
	t.Helper()
	testkit.Poll(t, timeout, what, try)
}

// pollErr is poll returning the failure instead.
func pollErr(timeout time.Duration, what string, try func() error) error {
	return testkit.PollErr(timeout, what, try)
}

func protoID(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

func idOf(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

// ttls are a tier's lifetimes; zero values take the server defaults.
type ttls struct {
	ca, x509, jwt, agent time.Duration
}

// tier is one running in-process arbor server and, for a downstream tier,
// the co-located agent attested to its parent and the downstream upstream.
type tier struct {
	t      *testing.T
	name   string
	parent *tier
	cfg    server.Config
	up     *downstream.Upstream // nil for the root and the wide tree's tiers
	colo   *runningAgent        // nil for the root and the wide tree's tiers
	// clock is the tier's clock when the test moves it (cfg.Now is its
	// Now): the wide tree's tiers, which run their rotation steps
	// themselves (rotateAt). Nil: the real time.
	clock *testkit.Clock

	srv     *server.Server
	admin   *grpc.ClientConn
	running bool
	stopFn  func()
}

func newTierConfig(t *testing.T, name string, tt ttls) server.Config {
	dir := shortDir(t)
	return server.Config{
		Name:         name,
		TrustDomain:  td,
		ListenAddr:   "127.0.0.1:0",
		AdminSocket:  filepath.Join(dir, "admin.sock"),
		StateDir:     filepath.Join(dir, "state"),
		JoinToken:    true,
		CATTL:        tt.ca,
		X509SVIDTTL:  tt.x509,
		JWTSVIDTTL:   tt.jwt,
		AgentSVIDTTL: tt.agent,
		Logger:       testLogger(),
	}
}

// startRoot starts a self-signed root tier.
func startRoot(t *testing.T, name string, tt ttls) *tier {
	t.Helper()
	tr := &tier{t: t, name: name, cfg: newTierConfig(t, name, tt)}
	tr.start()
	t.Cleanup(tr.stop)
	return tr
}

// agentIDOf is the alias SPIFFE ID of a tier's co-located agent at its parent.
func agentIDOf(name string) spiffeid.ID { return idOf("/arbor/agent/" + name) }

// serverIDOf is a tier server's SPIFFE ID, the downstream entry at its parent.
func serverIDOf(name string) spiffeid.ID { return idOf("/arbor/server/" + name) }

// startChild starts a downstream tier under parent the way `arbor up` and
// `arbor topology apply` wire it: a join token at the parent whose alias is
// the co-located agent's ID, a downstream entry for the child server's ID
// parented to that alias, the co-located agent attested with the token, and
// the child server getting its intermediate CA through the agent's Workload
// API SVID.
func startChild(t *testing.T, parent *tier, name string, tt ttls) *tier {
	t.Helper()
	alias := agentIDOf(name)
	token := parent.joinToken(alias)
	parent.createEntry(&types.Entry{
		ParentId:   protoID(alias),
		SpiffeId:   protoID(serverIDOf(name)),
		Selectors:  []*types.Selector{{Type: "tier", Value: name}},
		Downstream: true,
	})
	colo := startAgent(t, parent, token, selector.Selector{Type: "tier", Value: name})

	// The X509Source inside the upstream lives as long as the test.
	life, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	wctx, wcancel := context.WithTimeout(life, 30*time.Second)
	defer wcancel()
	up, err := downstream.New(wctx, downstream.Config{
		TrustDomain:     td,
		ParentAddress:   parent.addr(),
		WorkloadAPIAddr: "unix://" + colo.sock,
		CallTimeout:     5 * time.Second,
		Logger:          testLogger(),
	})
	if err != nil {
		t.Fatalf("downstream.New for %s: %v", name, err)
	}
	t.Cleanup(func() { up.Close() })

	cfg := newTierConfig(t, name, tt)
	cfg.Parent = up
	cfg.ParentBundleSyncInterval = syncEvery
	tr := &tier{t: t, name: name, parent: parent, cfg: cfg, up: up, colo: colo}
	tr.start()
	t.Cleanup(tr.stop)
	return tr
}

// start runs the server (again, on the same state directory and port after
// a stop) and waits until it is ready.
func (tr *tier) start() {
	t := tr.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, tr.cfg)
	if err != nil {
		cancel()
		t.Fatalf("%s: server.New: %v", tr.name, err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatalf("%s: Listen: %v", tr.name, err)
	}
	tr.cfg.ListenAddr = srv.AgentAddr().String() // same port on restart
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("%s: server stopped before ready: %v", tr.name, err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("%s: server not ready after 30s", tr.name)
	}

	// A tier whose clock the test moves gets no rotateEvery ticker: it
	// would run rotation steps at the moved times besides the test's own
	// (the server's 10s loop still runs, as in production).
	rctx, rcancel := context.WithCancel(context.Background())
	var rwg sync.WaitGroup
	if tr.clock == nil {
		rwg.Go(func() {
			tick := time.NewTicker(rotateEvery)
			defer tick.Stop()
			for {
				select {
				case <-rctx.Done():
					return
				case <-tick.C:
				}
				sctx, c := context.WithTimeout(rctx, 10*time.Second)
				srv.CA().Rotate(sctx) // failures (parent down) are retried next tick, as Run does
				c()
			}
		})
	}

	conn, err := grpc.NewClient("unix://"+tr.cfg.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	tr.srv, tr.admin, tr.running = srv, conn, true
	var once sync.Once
	tr.stopFn = func() {
		once.Do(func() {
			conn.Close()
			rcancel()
			rwg.Wait()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: server Run: %v", tr.name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s: server did not stop within 30s", tr.name)
			}
		})
	}
}

// stop stops the server, keeping its state directory and port.
func (tr *tier) stop() {
	if tr.running {
		tr.stopFn()
		tr.running = false
	}
}

func (tr *tier) addr() string { return tr.cfg.ListenAddr }

// bundle is the tier's bundle as its admin API serves it.
func (tr *tier) bundle(ctx context.Context) (*types.Bundle, error) {
	b, err := bundlev1.NewBundleClient(tr.admin).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s: GetBundle: %w", tr.name, err)
	}
	return b, nil
}

// roots returns the X.509 authorities of the tier's bundle.
func (tr *tier) roots() []*x509.Certificate {
	tr.t.Helper()
	b, err := tr.bundle(callCtx(tr.t))
	if err != nil {
		tr.t.Fatal(err)
	}
	var out []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			tr.t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// joinToken creates a join token; a non-zero alias also makes the server
// create a node alias entry alias -> the agent's ID.
func (tr *tier) joinToken(alias spiffeid.ID) string {
	tr.t.Helper()
	req := &agentv1.CreateJoinTokenRequest{Ttl: 600}
	if !alias.IsZero() {
		req.AgentId = protoID(alias)
	}
	jt, err := agentv1.NewAgentClient(tr.admin).CreateJoinToken(callCtx(tr.t), req)
	if err != nil {
		tr.t.Fatalf("%s: CreateJoinToken: %v", tr.name, err)
	}
	return jt.Value
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

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixedSVID serves one X509-SVID, for a client presenting an identity
// without an agent.
type fixedSVID struct{ *x509svid.SVID }

func (f fixedSVID) GetX509SVID() (*x509svid.SVID, error) { return f.SVID, nil }

// constAttestor gives every Workload API caller the same selectors: each
// agent of these tests serves one identity to the test process.
type constAttestor []selector.Selector

func (c constAttestor) Attest(context.Context, int32) ([]selector.Selector, error) { return c, nil }

var _ agent.WorkloadAttestor = constAttestor(nil)

// runningAgent is an in-process arbor agent.
type runningAgent struct {
	*agent.Agent
	sock   string
	cancel func()
	done   chan error
}

// startAgent attests a new agent to srv with a join token and waits until it
// is ready; its workload attestor gives callers sels.
func startAgent(t *testing.T, srv *tier, token string, sels ...selector.Selector) *runningAgent {
	t.Helper()
	dir := shortDir(t)
	cfg := agent.Config{
		TrustDomain:       td,
		ServerAddress:     srv.addr(),
		TrustBundle:       srv.roots(),
		DataDir:           filepath.Join(dir, "data"),
		SocketPath:        filepath.Join(dir, "api.sock"),
		JoinToken:         token,
		SyncInterval:      syncEvery,
		WorkloadAttestors: []agent.WorkloadAttestor{constAttestor(sels)},
		Logger:            testLogger(),
	}
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &runningAgent{Agent: ag, sock: cfg.SocketPath, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s")
		}
	})
	select {
	case <-ag.Ready():
	case err := <-a.done:
		t.Fatalf("agent of %s stopped before ready: %v", srv.name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("agent of %s not ready after 30s", srv.name)
	}
	return a
}

// workload is a workload registered on a tier, served by its own agent and
// reached through a go-spiffe Workload API client.
type workload struct {
	id     spiffeid.ID
	tier   *tier
	agent  *runningAgent
	client *workloadapi.Client
}

// startWorkload registers /workload/<name> on tr for a new agent attested
// with a join token, starts that agent, and waits for the first X509-SVID.
func startWorkload(t *testing.T, tr *tier, name string) *workload {
	t.Helper()
	token := tr.joinToken(spiffeid.ID{})
	id := idOf("/workload/" + name)
	tr.createEntry(&types.Entry{
		ParentId:  protoID(idOf("/spire/agent/join_token/" + token)),
		SpiffeId:  protoID(id),
		Selectors: []*types.Selector{{Type: "wl", Value: name}},
	})
	ag := startAgent(t, tr, token, selector.Selector{Type: "wl", Value: name})
	c, err := workloadapi.New(callCtx(t), workloadapi.WithAddr("unix://"+ag.sock))
	if err != nil {
		t.Fatalf("workloadapi.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	w := &workload{id: id, tier: tr, agent: ag, client: c}
	poll(t, 30*time.Second, "first X509-SVID of "+name, func() error {
		_, _, err := w.verify(callCtx(t))
		return err
	})
	return w
}

// verify fetches the workload's X509-SVID and the bundles of the same agent
// and verifies the one against the other at the current time.
func (w *workload) verify(ctx context.Context) (*x509svid.SVID, [][]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svid, err := w.client.FetchX509SVID(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("FetchX509SVID: %w", err)
	}
	if svid.ID != w.id {
		return nil, nil, fmt.Errorf("agent served %s, want %s", svid.ID, w.id)
	}
	bundles, err := w.client.FetchX509Bundles(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("FetchX509Bundles: %w", err)
	}
	_, chains, err := x509svid.Verify(svid.Certificates, bundles)
	if err != nil {
		return svid, nil, fmt.Errorf("SVID serial %v (not after %v) does not verify against its agent's bundle: %w",
			svid.Certificates[0].SerialNumber, svid.Certificates[0].NotAfter.Format(time.TimeOnly), err)
	}
	return svid, chains, nil
}

// checker continuously verifies a workload's X509-SVID against its own
// agent's bundle and records what it saw.
type checker struct {
	w      *workload
	cancel func()
	done   chan struct{}

	mu       sync.Mutex
	checks   int
	failures []string
	// serials of the certificates seen, per chain position: 0 the SVID, 1
	// the issuing CA, ..., and "root" for the bundle authority it chained to.
	seen map[string]map[string]time.Time
}

func startChecker(t *testing.T, w *workload, every time.Duration) *checker {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checker{w: w, cancel: cancel, done: make(chan struct{}), seen: map[string]map[string]time.Time{}}
	go func() {
		defer close(c.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			c.check(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *checker) check(ctx context.Context) {
	svid, chains, err := c.w.verify(ctx)
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	if err != nil {
		c.failures = append(c.failures, now.Format("15:04:05.000")+" "+err.Error())
		return
	}
	note := func(pos, serial string) {
		if c.seen[pos] == nil {
			c.seen[pos] = map[string]time.Time{}
		}
		if _, ok := c.seen[pos][serial]; !ok {
			c.seen[pos][serial] = now
		}
	}
	for i, cert := range svid.Certificates {
		note(fmt.Sprint(i), cert.SerialNumber.String())
	}
	chain := chains[0]
	note("root", chain[len(chain)-1].SerialNumber.String())
}

func (c *checker) stop() {
	c.cancel()
	<-c.done
}

// distinct returns how many different certificates were seen at pos, and
// how many of them were first seen within [from, to).
func (c *checker) distinct(pos string, from, to time.Time) (total, within int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, at := range c.seen[pos] {
		total++
		if !at.Before(from) && at.Before(to) {
			within++
		}
	}
	return total, within
}

// result returns the number of checks and the failures so far.
func (c *checker) result() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks, append([]string(nil), c.failures...)
}

// assertClean fails the test if any check failed or too few ran.
func (c *checker) assertClean(t *testing.T, minChecks int) {
	t.Helper()
	n, failures := c.result()
	if len(failures) > 0 {
		t.Errorf("workload %s: %d of %d continuous checks failed; first ones:\n%s", c.w.id, len(failures), n, joinFirst(failures, 5))
	}
	if n < minChecks {
		t.Errorf("workload %s: only %d checks ran, want at least %d", c.w.id, n, minChecks)
	}
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

func joinFirst(lines []string, n int) string {
	var out string
	for i, l := range lines {
		if i == n {
			out += fmt.Sprintf("  ... and %d more\n", len(lines)-n)
			break
		}
		out += "  " + l + "\n"
	}
	return out
}

// halfLife is when a CA manager prepares the successor of c.
func halfLife(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

// sleepUntil waits until at, or returns an error when ctx ends first.
func sleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return errors.New("context ended before " + at.Format(time.TimeOnly))
	}
}

// jwtKeyID returns the kid header of a compact JWS.
func jwtKeyID(token string) (string, error) {
	header, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return "", err
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", err
	}
	return h.KID, nil
}
