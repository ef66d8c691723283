package loadgen_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// startArbor runs an arbor server in-process on loopback with a SQLite file
// and returns a loadgen configuration pointing at it.
func startArbor(t *testing.T) loadgen.Config {
	t.Helper()
	dir := testkit.ShortDir(t)
	cfg := server.Config{Name: "load", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "a.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true}
	srv := testkit.StartServer(t, cfg)
	return loadgen.Config{AdminSocket: cfg.AdminSocket, ServerAddr: srv.AgentAddr().String(), TrustDomain: td,
		ServerPID: os.Getpid(), RPCTimeout: 20 * time.Second, WarmupTimeout: 20 * time.Second}
}

func testCtx(t *testing.T) context.Context {
	return testkit.Context(t, 60*time.Second)
}

// setUp builds a generator for cfg, closed at the test's end, and runs its
// Setup (failing t on an error); it returns the generator, the setup report
// and the test's context.
func setUp(t *testing.T, cfg loadgen.Config) (*loadgen.Generator, *loadgen.SetupReport, context.Context) {
	t.Helper()
	gen, err := loadgen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gen.Close() })
	ctx := testCtx(t)
	setup, err := gen.Setup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return gen, setup, ctx
}

// TestLoadAgainstArbor runs every RPC of the agent loop against arbor in
// several entry layouts and wants every call answered without an error.
func TestLoadAgainstArbor(t *testing.T) {
	cases := []struct {
		name      string
		mutate    func(*loadgen.Config)
		wantSeen  int // entries each agent syncs
		wantTotal int
	}{
		{"direct unix", func(c *loadgen.Config) { c.Agents, c.Entries, c.EntriesPerAgent = 3, 300, 5 }, 5, 300},
		{"alias k8s", func(c *loadgen.Config) {
			c.Agents, c.Entries, c.EntriesPerAgent, c.AgentsPerAlias = 4, 100, 6, 2
			c.Parenting, c.Shape = loadgen.ParentAlias, loadgen.ShapeK8s
		}, 7, 100}, // six entries under the alias plus the alias entry itself
		// More entries than one sync page: revisions first, then entries by ID.
		{"paged sync mixed", func(c *loadgen.Config) {
			c.Agents, c.Entries, c.EntriesPerAgent, c.Shape = 1, 2100, 2100, loadgen.ShapeMixed
		}, 2100, 2100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := startArbor(t)
			tc.mutate(&cfg)
			gen, setup, ctx := setUp(t, cfg)
			if setup.Entries != tc.wantTotal || setup.Errors != 0 || len(gen.Agents()) != cfg.Agents {
				t.Errorf("Setup: %d entries, %d errors, %d agents; want %d, 0, %d", setup.Entries, setup.Errors, len(gen.Agents()), tc.wantTotal, cfg.Agents)
			}
			rep, err := gen.Run(ctx, loadgen.Load{Name: "all", Iterations: 2, Sync: true, X509: true, X509Batch: 500, JWT: 2})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Errors != 0 {
				for name, s := range rep.RPCs {
					t.Logf("%s errors: %v", name, s.Errors)
				}
				t.Fatalf("run had %d errors, want 0", rep.Errors)
			}
			sync, x509, jwt := rep.RPCs[loadgen.RPCSync], rep.RPCs[loadgen.RPCX509], rep.RPCs[loadgen.RPCJWT]
			if sync == nil || x509 == nil || jwt == nil {
				t.Fatalf("report lacks an RPC: %v", rep.RPCs)
			}
			calls := int64(2 * cfg.Agents)
			got := []int64{sync.Calls, sync.Items, x509.Items, jwt.Items}
			want := []int64{calls, calls * int64(tc.wantSeen), calls * int64(tc.wantSeen), 2 * calls}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("[sync calls, synced entries, X509-SVIDs, JWT-SVIDs] (-want +got):\n%s", diff)
			}
			if rep.Server == nil || rep.Server.RSSPeakBytes <= 0 || rep.Server.CPUSeconds < 0 {
				t.Errorf("server process stats = %+v, want a positive RSS", rep.Server)
			}
			if sync.P99MS < sync.P50MS || sync.P50MS <= 0 {
				t.Errorf("sync p50 %v ms, p99 %v ms: want 0 < p50 <= p99", sync.P50MS, sync.P99MS)
			}
		})
	}
}

// TestRunBoundedByDuration checks that a duration-bounded load at a fixed
// interval stops and spreads the agents' calls.
func TestRunBoundedByDuration(t *testing.T) {
	cfg := startArbor(t)
	cfg.Agents, cfg.Entries = 2, 20
	gen, _, ctx := setUp(t, cfg)
	rep, err := gen.Run(ctx, loadgen.Load{Name: "sync", Agents: 1, Interval: 100 * time.Millisecond, Duration: time.Second, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.RPCs[loadgen.RPCSync]
	// One agent, one call per 100ms for 1s: at most 10 calls.
	if rep.Agents != 1 || s == nil || s.Calls < 1 || s.Calls > 10 || rep.Errors != 0 {
		t.Errorf("report: %d agents, sync %+v, %d errors; want 1 agent, 1..10 calls, 0 errors", rep.Agents, s, rep.Errors)
	}
	if _, ok := rep.RPCs[loadgen.RPCX509]; ok {
		t.Errorf("a sync-only load called %s", loadgen.RPCX509)
	}
}

func TestConfigErrors(t *testing.T) {
	good := loadgen.Config{AdminSocket: "/nonexistent/a.sock", ServerAddr: "127.0.0.1:1", TrustDomain: td}
	cases := []struct {
		name   string
		mutate func(*loadgen.Config)
	}{
		{"no socket", func(c *loadgen.Config) { c.AdminSocket = "" }},
		{"no trust domain", func(c *loadgen.Config) { c.TrustDomain = spiffeid.TrustDomain{} }},
		{"bad shape", func(c *loadgen.Config) { c.Shape = "square" }},
		{"bad parenting", func(c *loadgen.Config) { c.Parenting = "adopted" }},
		{"negative entries", func(c *loadgen.Config) { c.Entries = -1 }},
		{"server address without port", func(c *loadgen.Config) { c.ServerAddr = "127.0.0.1" }},
		{"server listed twice", func(c *loadgen.Config) { c.ServerAddr = "127.0.0.1:1,127.0.0.1:1" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			if _, err := loadgen.New(cfg); !errors.Is(err, loadgen.ErrConfig) {
				t.Errorf("New(%s) = %v, want ErrConfig", tc.name, err)
			}
		})
	}
	gen, err := loadgen.New(good)
	if err != nil {
		t.Fatalf("New(good) = %v", err)
	}
	defer gen.Close()
	if _, err := gen.Run(context.Background(), loadgen.Load{Sync: true, Iterations: 1}); err == nil {
		t.Error("Run before Setup succeeded, want an error")
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	cases := []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{ms(hundred...), 0.5, 50 * time.Millisecond},
		{ms(hundred...), 0.95, 95 * time.Millisecond},
		{ms(hundred...), 0.99, 99 * time.Millisecond},
		{ms(hundred...), 1, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := loadgen.Percentile(tc.in, tc.q); got != tc.want {
			t.Errorf("Percentile(%d samples, %v) = %v, want %v", len(tc.in), tc.q, got, tc.want)
		}
	}
}

func TestReadProc(t *testing.T) {
	s, err := loadgen.ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes < 1<<20 || s.CPUSeconds < 0 {
		t.Errorf("ReadProc(self) = %+v, want an RSS of at least 1 MiB", s)
	}
	if _, err := loadgen.ReadProc(1 << 30); err == nil {
		t.Error("ReadProc(no such pid) succeeded")
	}
}
