package agent_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func shortDir(t testing.TB) string { return testkit.ShortDir(t) }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("AGENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// poll calls try until it succeeds or the timeout passes.
func poll(t testing.TB, timeout time.Duration, what string, try func() error) {
	t.Helper()
	testkit.Poll(t, timeout, what, try)
}

// testServer is an in-process arbor server.
type testServer struct {
	t     testing.TB
	cfg   server.Config
	admin *grpc.ClientConn
	stop  func()
	roots []*x509.Certificate
}

func startServer(t testing.TB, mutate func(*server.Config)) *testServer {
	t.Helper()
	dir := shortDir(t)
	cfg := server.Config{
		Name: "test", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), StateDir: filepath.Join(dir, "state"),
		JoinToken: true,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s := &testServer{t: t, cfg: cfg}
	s.start()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *testServer) start() {
	t := s.t
	t.Helper()
	ts := testkit.StartServer(t, s.cfg)
	s.cfg.ListenAddr = ts.AgentAddr().String()
	s.admin = ts.Admin
	s.stop = func() { ts.Stop(t) }
	conn := ts.Admin
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.roots = nil
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		s.roots = append(s.roots, c)
	}
}

func (s *testServer) restart() { s.stop(); s.start() }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *testServer) token() string {
	s.t.Helper()
	jt, err := agentv1.NewAgentClient(s.admin).CreateJoinToken(ctxT(s.t), &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		s.t.Fatalf("CreateJoinToken: %v", err)
	}
	return jt.Value
}

func (s *testServer) createEntry(e *types.Entry) string {
	s.t.Helper()
	resp, err := entryv1.NewEntryClient(s.admin).BatchCreateEntry(ctxT(s.t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		s.t.Fatalf("BatchCreateEntry: %v", err)
	}
	if r := resp.Results[0]; r.Status.Code != 0 {
		s.t.Fatalf("BatchCreateEntry: %v", r.Status)
	}
	return resp.Results[0].Entry.Id
}

func (s *testServer) countAgents() int32 {
	s.t.Helper()
	resp, err := agentv1.NewAgentClient(s.admin).CountAgents(ctxT(s.t), &agentv1.CountAgentsRequest{})
	if err != nil {
		s.t.Fatalf("CountAgents: %v", err)
	}
	return resp.Count
}

func protoID(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// workloadEntry registers id for workloads with selector test:id:<name>
// under the agent's ID.
func (s *testServer) workloadEntry(agentID spiffeid.ID, name string, ttl int32) string {
	return s.createEntry(&types.Entry{
		ParentId: protoID(agentID), SpiffeId: protoID(spiffeid.RequireFromPath(td, "/"+name)),
		Selectors: []*types.Selector{{Type: "test", Value: "id:" + name}}, X509SvidTtl: ttl,
	})
}

// pidAttestor maps pids to selectors; unknown pids get none.
type pidAttestor struct {
	mu sync.Mutex
	m  map[int32][]selector.Selector
}

func newPIDAttestor() *pidAttestor { return &pidAttestor{m: map[int32][]selector.Selector{}} }

func (p *pidAttestor) set(pid int, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[int32(pid)] = []selector.Selector{{Type: "test", Value: "id:" + name}}
}

func (p *pidAttestor) Attest(_ context.Context, pid int32) ([]selector.Selector, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[pid], nil
}

var _ agent.WorkloadAttestor = (*pidAttestor)(nil)

// testAgent is a running agent.
type testAgent struct {
	*agent.Agent
	cfg    agent.Config
	cancel func()
	done   chan error
}

func agentPath(token string) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+token)
}

func (s *testServer) agentConfig(t testing.TB, token string, att agent.WorkloadAttestor) agent.Config {
	dir := shortDir(t)
	return agent.Config{
		TrustDomain: td, ServerAddress: s.cfg.ListenAddr, TrustBundle: s.roots,
		DataDir: filepath.Join(dir, "data"), SocketPath: filepath.Join(dir, "api.sock"),
		JoinToken: token, SyncInterval: 200 * time.Millisecond,
		WorkloadAttestors: []agent.WorkloadAttestor{att}, Logger: testLogger(t),
	}
}

// runAgent starts an agent and waits until it is ready.
func runAgent(t testing.TB, cfg agent.Config) *testAgent {
	t.Helper()
	a := startAgent(t, cfg)
	select {
	case <-a.Ready():
	case err := <-a.done:
		t.Fatalf("agent stopped before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready after 30s")
	}
	return a
}

func startAgent(t testing.TB, cfg agent.Config) *testAgent {
	t.Helper()
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{Agent: ag, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- ag.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// stop cancels the agent and returns Run's result.
func (a *testAgent) stop(t testing.TB) error {
	a.cancel()
	select {
	case err, ok := <-a.done:
		if ok {
			close(a.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Error("agent did not stop within 30s")
		return errors.New("timeout")
	}
}

func socketAddr(cfg agent.Config) string { return "unix://" + cfg.SocketPath }

func mustOK(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
