package loadgen_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/arborid/arbor/test/load/loadgen"
)

// TestFleetSyncs is the CI form of the ten-thousand-agent run
// (docs/perf/agents-10k.md): a few hundred agents, each with its own SVID and
// TLS connection, sync every second against one arbor server, staggered by
// the dispatcher or with a goroutine each. It asserts that no call failed
// and that every agent synced all its entries; latencies are logged, never
// asserted. ARBOR_LOAD_FLEET sets the number of agents (default 300).
func TestFleetSyncs(t *testing.T) {
	agents := 300
	if s := os.Getenv("ARBOR_LOAD_FLEET"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("ARBOR_LOAD_FLEET=%q: want a positive number", s)
		}
		agents = n
	}
	const perAgent = 5
	cfg := startArbor(t)
	cfg.Agents, cfg.Entries, cfg.EntriesPerAgent, cfg.OtherParents = agents, agents*perAgent*2, perAgent, 100
	gen, setup, ctx := setUp(t, cfg)
	if setup.Errors != 0 || len(gen.Agents()) != agents {
		t.Fatalf("Setup: %d errors, %d agents; want 0, %d", setup.Errors, len(gen.Agents()), agents)
	}
	t.Logf("setup: %d entries in %.2fs, %d agents attested in %.2fs, warm-up %.2fs", setup.Entries, setup.SeedSeconds, agents, setup.AttestSeconds, setup.WarmupSeconds)
	for _, mode := range []struct {
		name       string
		goroutines bool
	}{{"dispatcher", false}, {"goroutine per agent", true}} {
		t.Run(mode.name, func(t *testing.T) {
			rep, err := gen.Run(ctx, loadgen.Load{Name: mode.name, Interval: time.Second, Iterations: 2, Sync: true, Workers: 32, PerAgentGoroutines: mode.goroutines})
			if err != nil {
				t.Fatal(err)
			}
			s := rep.RPCs[loadgen.RPCSync]
			if rep.Errors != 0 || s == nil {
				t.Fatalf("%d errors, sync stats %+v; want none and syncs", rep.Errors, s)
			}
			if rep.AgentsSynced != agents || rep.MinSyncsPerAgent < 1 {
				t.Errorf("%d/%d agents synced all their entries, fewest syncs %d; want all, at least 1", rep.AgentsSynced, agents, rep.MinSyncsPerAgent)
			}
			if want := int64(2*agents - rep.Skipped); s.Calls != want || s.Items != want*perAgent {
				t.Errorf("%d syncs returning %d entries, want %d (2 per agent, %d skipped) returning %d each", s.Calls, s.Items, want, rep.Skipped, perAgent)
			}
			t.Logf("%s: %d syncs, p50 %.2f ms, p99 %.2f ms, start lag p99 %.2f ms, %d skipped, CPU of this process (server and generator) %.2fs",
				mode.name, s.Calls, s.P50MS, s.P99MS, rep.StartLagP99MS, rep.Skipped, rep.Server.CPUSeconds)
		})
	}
}
