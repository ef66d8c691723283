package ha

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

// The kill loop's shape: a minute of killing one replica (SIGKILL), keeping
// it down long enough that its agents must move, and restarting it.
const (
	loopDuration = 60 * time.Second
	downFor      = 3 * time.Second
	settleFor    = time.Second
	workloadTTL  = 30 * time.Second
)

// TestKillLoop runs three replicas on one PostgreSQL under 50 simulated
// agents (syncs and X509-SVID batches, every replica's address), three real
// arbor agents and go-spiffe workloads with 30s SVIDs, and kills one
// replica with SIGKILL every few seconds for a minute, restarting it each
// time. It asserts that no Workload API fetch failed and every SVID
// verified the whole time, that every agent whose server died moved to a
// live one while it was down, that no agent attested again, that the
// simulated agents saw nothing but Unavailable from the dying replica, and
// that the entry and agent counts on every replica are what they were. It
// reports the agents' failover times.
func TestKillLoop(t *testing.T) {
	ctx := testkit.Context(t, 8*time.Minute)
	tr := newTier(t, 3, testkit.PostgresDSN(t), "")
	tr.startAll()

	gen := tr.simulatedAgents(ctx, tr.addrs())
	agents, sockets := tr.startFleet(t)

	type counts struct{ entries, agents int32 }
	countAll := func() []counts {
		var out []counts
		for k := range tr.replicas {
			e, a := tr.counts(k + 1)
			out = append(out, counts{e, a})
		}
		return out
	}
	// Every replica holds what was written through any of them once it has
	// polled (about a second): 50 simulated agents' 500 entries, 3 agents'
	// 2 workload entries each.
	want := counts{506, 53}
	sameEverywhere := func(want counts) func() error {
		return func() error {
			for k, c := range countAll() {
				if c != want {
					return fmt.Errorf("replica %d counts %+v, want %+v", k+1, c, want)
				}
			}
			return nil
		}
	}
	testkit.Poll(t, 30*time.Second, "every replica counting the same entries and agents before the loop", sameEverywhere(want))

	workloads := watchWorkloads(sockets, 200*time.Millisecond)
	servers := watchServers(agents)
	defer servers.finish()
	type loadResult struct {
		rep *loadgen.Report
		err error
	}
	loadDone := make(chan loadResult, 1)
	go func() {
		rep, err := gen.Run(ctx, loadgen.Load{Name: "kill loop", Interval: time.Second, Duration: loopDuration + 10*time.Second, Sync: true, X509: true})
		loadDone <- loadResult{rep, err}
	}()
	// Let every agent report a server before the first kill.
	testkit.Poll(t, 30*time.Second, "every agent reporting its server", func() error {
		for _, ag := range agents {
			if servers.current(ag.name) == "" {
				return fmt.Errorf("%s has no server yet", ag.name)
			}
		}
		return nil
	})

	var failovers []time.Duration
	kills := 0
	start := time.Now()
	for i := 0; time.Since(start) < loopDuration; i++ {
		// Kill the replica one of the arbor agents uses (in turn), so that
		// every kill moves at least one of them.
		target := agents[i%len(agents)]
		addr := servers.current(target.name)
		k := slices.IndexFunc(tr.replicas, func(r *replica) bool { return r.addr() == addr }) + 1
		if k == 0 {
			t.Fatalf("%s reports server %q, not a replica", target.name, addr)
		}
		var affected []*arborAgent
		for _, ag := range agents {
			if servers.current(ag.name) == addr {
				affected = append(affected, ag)
			}
		}
		killedAt := time.Now()
		tr.kill(k)
		kills++
		time.Sleep(downFor)
		for _, ag := range affected {
			at, ok := servers.movedAway(ag.name, addr, killedAt)
			if !ok {
				t.Errorf("kill %d: %s still reports replica %d (%s) %s after it was killed", kills, ag.name, k, addr, downFor)
				continue
			}
			failovers = append(failovers, at.Sub(killedAt))
		}
		tr.start(k)
		time.Sleep(settleFor)
	}
	loopSeconds := time.Since(start).Seconds()
	fetches, failures := workloads.finish()
	res := <-loadDone
	if res.err != nil {
		t.Fatalf("load: %v", res.err)
	}

	t.Logf("kill loop: %d kills in %.0fs; agents' failover (kill to a live replica answering): %s", kills, loopSeconds, percentiles(failovers))
	t.Logf("workloads: %d Workload API fetches, %d failures", fetches, len(failures))
	for _, name := range []string{loadgen.RPCSync, loadgen.RPCX509} {
		if s := res.rep.RPCs[name]; s != nil {
			t.Logf("simulated agents: %s calls=%d items=%d p50=%.1fms p99=%.1fms errors: %s", name, s.Calls, s.Items, s.P50MS, s.P99MS, errorsByCode(s.Errors))
		}
	}

	if len(failovers) == 0 {
		t.Error("no agent failed over: the loop tested nothing")
	}
	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}
	if fetches < 100 {
		t.Errorf("only %d Workload API fetches", fetches)
	}
	for _, ag := range agents {
		ag.checkNoReattestation(t)
		for _, id := range ag.workloads {
			// 30s SVIDs renew at half-life: a minute sees several.
			if n := workloads.distinctSVIDs(id); n < 2 {
				t.Errorf("%s: %d distinct X509-SVIDs during the loop; it was never renewed", id, n)
			}
		}
	}
	for _, name := range []string{loadgen.RPCSync, loadgen.RPCX509} {
		s := res.rep.RPCs[name]
		if s == nil || s.Items == 0 {
			t.Errorf("simulated agents: no successful %s", name)
			continue
		}
		for c, n := range s.Errors {
			// A call in flight on the replica that died fails Unavailable
			// (its connection broke); the next one goes to a live replica.
			if c != codes.Unavailable.String() {
				t.Errorf("simulated agents: %d %s errors on %s", n, c, name)
			}
		}
	}
	if err := testkit.PollErr(30*time.Second, "every replica's counts after the loop", sameEverywhere(want)); err != nil {
		t.Errorf("after the loop: %v", err)
	}
}
