package soak

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

// defaultChaos is the CI form's chaos duration; ARBOR_SOAK_DURATION sets
// another (ARBOR_SOAK_DURATION=10m for the long form).
const defaultChaos = 60 * time.Second

// The chaos loop's rhythm: a kill every 2-6s (from kill to kill, or right
// after the previous process recovered if that took longer), each process
// down for 0.5-3s before it is started again.
const (
	gapMin, gapMax   = 2 * time.Second, 6 * time.Second
	downMin, downMax = 500 * time.Millisecond, 3 * time.Second
	// recoverWithin bounds one process's recovery: past it, the tier did
	// not recover by itself, and the test fails.
	recoverWithin = 90 * time.Second
)

func chaosDuration(t *testing.T) time.Duration {
	s := os.Getenv("ARBOR_SOAK_DURATION")
	if s == "" {
		return defaultChaos
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("ARBOR_SOAK_DURATION=%q: want a positive Go duration such as 10m", s)
	}
	return d
}

func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv("ARBOR_SOAK_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ARBOR_SOAK_SEED=%q: want an unsigned integer", s)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// TestSoak runs the tree (7 servers, 6 co-located agents, 4 workload agents
// with go-spiffe watchers holding 40s SVIDs) under simulated agents'
// syncs and SVID requests on region-a and leaf-b1 and a writer creating and
// deleting entries on every server, while the chaos loop SIGKILLs one
// random process every few seconds and restarts it. Every process is
// killed once per round, in a random order. It fails when a held SVID is
// ever expired or does not chain to the root, an acknowledged create is
// missing or an acknowledged delete is back (after every restart of that
// server and at the end), an agent attested again or was lost (checked at
// every server after every restart), a process does not recover within
// recoverWithin, or the simulated agents see any error but Unavailable. It
// logs the recovery times per kind of process.
func TestSoak(t *testing.T) {
	chaos := chaosDuration(t)
	seed := chaosSeed(t)
	t.Logf("chaos for %v, seed %d (ARBOR_SOAK_SEED=%d repeats the order of kills)", chaos, seed, seed)
	ctx := testkit.Context(t, chaos+6*time.Minute)
	began := time.Now()

	tr := buildTree(t, ctx)
	watchers := tr.registerWorkloads(ctx)
	in := tr.newIntermediates(ctx)
	for name := range in.ups {
		if err := in.mint(ctx, name); err != nil {
			t.Fatalf("intermediate for %s before the loop: %v", name, err)
		}
	}

	// Simulated agents on a regional tier and a leaf.
	type loadResult struct {
		name string
		rep  *loadgen.Report
		err  error
	}
	var gens []*loadgen.Generator
	var loadNames []string
	for _, name := range []string{"region-a", "leaf-b1"} {
		s := tr.serverNamed(name)
		g, err := loadgen.New(loadgen.Config{AdminSocket: s.srv.AdminSocket, ServerAddr: s.srv.Address, TrustDomain: td,
			Agents: 10, Entries: 50, EntriesPerAgent: 5, RPCTimeout: 10 * time.Second, WarmupTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		if _, err := g.Setup(ctx); err != nil {
			t.Fatalf("simulated agents on %s: %v", name, err)
		}
		gens = append(gens, g)
		loadNames = append(loadNames, name)
	}

	agentsBefore, err := tr.listAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nAgents := 0
	for _, ids := range agentsBefore {
		nAgents += len(ids)
	}

	checker := startSVIDChecker(tr, watchers, 250*time.Millisecond)
	wr := newWriter(tr.servers, seed)
	wctx, stopWriting := context.WithCancel(ctx)
	var writing sync.WaitGroup
	writing.Go(func() { wr.run(wctx, 100*time.Millisecond) })
	defer func() { stopWriting(); writing.Wait() }()
	loads := make(chan loadResult, len(gens))
	for i, g := range gens {
		go func() {
			rep, err := g.Run(ctx, loadgen.Load{Name: "soak " + loadNames[i], Interval: time.Second, Duration: chaos, Sync: true, X509: true})
			loads <- loadResult{loadNames[i], rep, err}
		}()
	}
	t.Logf("set up in %.1fs: %d processes, %d agents attested across the tree, %d watchers", time.Since(began).Seconds(), len(tr.members()), nAgents, len(watchers))

	// The chaos loop.
	rng := mrand.New(mrand.NewPCG(seed, 1))
	targets := tr.members()
	var order []int
	recovery := map[string][]time.Duration{}
	kills := 0
	start := time.Now()
	next := start
	for time.Since(start) < chaos && ctx.Err() == nil {
		if len(order) == 0 {
			order = rng.Perm(len(targets))
		}
		m := targets[order[0]]
		order = order[1:]
		time.Sleep(time.Until(next))
		killedAt := time.Now()
		m.kill()
		kills++
		down := downMin + time.Duration(rng.Int64N(int64(downMax-downMin)))
		next = killedAt.Add(gapMin + time.Duration(rng.Int64N(int64(gapMax-gapMin))))
		time.Sleep(down)
		restartedAt := time.Now()
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		if err := testkit.PollErr(recoverWithin, m.name+" recovering", func() error { return tr.recovered(ctx, m, in, watchers, restartedAt) }); err != nil {
			t.Errorf("kill %d: %s did not recover by itself: %v\n%s", kills, m.name, err, tail(m.log, 30))
			break
		}
		took := time.Since(restartedAt)
		recovery[m.kind] = append(recovery[m.kind], took)
		t.Logf("kill %2d at +%5.1fs: %-28s down %.1fs, recovered %.2fs after restart", kills, killedAt.Sub(start).Seconds(), m.name, down.Seconds(), took.Seconds())
		if m.isServer() {
			if err := testkit.PollErr(10*time.Second, "acknowledged writes on "+m.name, func() error { return wr.verify(ctx, m) }); err != nil {
				t.Errorf("kill %d, after %s restarted: %v", kills, m.name, err)
			}
		}
		if err := testkit.PollErr(10*time.Second, "the same agents everywhere", func() error { return tr.sameAgents(ctx, agentsBefore) }); err != nil {
			t.Errorf("kill %d, after %s restarted: %v", kills, m.name, err)
		}
	}
	loopSeconds := time.Since(start).Seconds()
	stopWriting()
	writing.Wait()

	// The end: everything serves, every acknowledged write is where it
	// was acknowledged, no agent changed, every workload renewed.
	for _, m := range targets {
		if err := testkit.PollErr(recoverWithin, m.name+" ready at the end", func() error { return m.ready(ctx) }); err != nil {
			t.Errorf("%v", err)
		}
	}
	for _, s := range tr.servers {
		if err := testkit.PollErr(10*time.Second, "acknowledged writes on "+s.name, func() error { return wr.verify(ctx, s) }); err != nil {
			t.Errorf("at the end: %v", err)
		}
	}
	if err := testkit.PollErr(10*time.Second, "the same agents everywhere", func() error { return tr.sameAgents(ctx, agentsBefore) }); err != nil {
		t.Errorf("at the end: %v", err)
	}
	// Every start of every agent resumed with its stored SVID: none
	// attested again (which a spent join token would refuse anyway).
	for _, m := range targets {
		if m.isServer() {
			continue
		}
		resumed, err := m.countLines("using stored agent SVID")
		if err != nil {
			t.Fatal(err)
		}
		if resumed != m.runs {
			t.Errorf("%s: %d of its %d starts resumed with its stored agent SVID", m.name, resumed, m.runs)
		}
		for _, s := range []string{`msg="node attested"`, "attesting again", "agent re-attested"} {
			if n, _ := m.countLines(s); n > 0 {
				t.Errorf("%s: %d log lines %q: it attested again", m.name, n, s)
			}
		}
	}
	checker.stop()
	checks, failures, distinct := checker.result()

	creates, deletes, failed, uncertain := wr.counts()
	t.Logf("chaos: %d kills in %.0fs (%d processes); whole test so far %.0fs", kills, loopSeconds, len(targets), time.Since(began).Seconds())
	t.Logf("writer: %d creates and %d deletes acknowledged, %d calls failed (%d unanswered, fate unknown)", creates, deletes, failed, uncertain)
	t.Logf("workloads: %d checks of %d watchers' SVIDs, %d failures", checks, len(watchers), len(failures))
	for _, k := range kinds {
		t.Logf("recovery of %-16s %s", k+":", summary(recovery[k]))
	}
	for range gens {
		r := <-loads
		if r.err != nil {
			t.Errorf("simulated agents on %s: %v", r.name, r.err)
			continue
		}
		for _, rpc := range []string{loadgen.RPCSync, loadgen.RPCX509} {
			s := r.rep.RPCs[rpc]
			if s == nil || s.Items == 0 {
				t.Errorf("simulated agents on %s: no successful %s", r.name, rpc)
				continue
			}
			t.Logf("simulated agents on %s: %s calls=%d items=%d p50=%.1fms p99=%.1fms errors=%v", r.name, rpc, s.Calls, s.Items, s.P50MS, s.P99MS, s.Errors)
			for c, n := range s.Errors {
				// A call to a killed server fails Unavailable; any
				// other code (PermissionDenied: the server forgot the
				// agent) is a bug.
				if c != codes.Unavailable.String() {
					t.Errorf("simulated agents on %s: %d %s errors on %s", r.name, n, c, rpc)
				}
			}
		}
	}

	for i, f := range failures {
		if i == 10 {
			t.Errorf("... and %d more SVID check failures", len(failures)-10)
			break
		}
		t.Error(f)
	}
	if checks < 10 {
		t.Errorf("only %d SVID checks ran", checks)
	}
	for _, w := range watchers {
		for _, id := range w.ids {
			// 40s SVIDs renew at half-life: the run sees several.
			if distinct[id] < 2 {
				t.Errorf("%s: %d distinct X509-SVIDs held during the run; it never renewed", id, distinct[id])
			}
		}
	}
	if kills < 3 {
		t.Errorf("only %d kills: the loop tested little", kills)
	}
	if creates == 0 {
		t.Error("the writer had no write acknowledged")
	}
}

// recovered is nil once m serves again and what depends on it works: a
// server with child tiers signs each child's intermediate CA; a co-located
// agent serves its server the SVID its parent signs an intermediate for; a
// workload agent has given every watcher a fresh X509 context holding all
// its SVIDs.
func (tr *tree) recovered(ctx context.Context, m *member, in *intermediates, ws []*watcher, restartedAt time.Time) error {
	if err := m.ready(ctx); err != nil {
		return err
	}
	switch m.kind {
	case kindRoot, kindRegional:
		for _, c := range tr.file.Children(m.srv.Name) {
			if err := in.mint(ctx, c.Name); err != nil {
				return fmt.Errorf("intermediate for %s: %w", c.Name, err)
			}
		}
	case kindColo:
		if err := in.mint(ctx, m.srv.Name); err != nil {
			return fmt.Errorf("intermediate for %s: %w", m.srv.Name, err)
		}
	case kindWorkload:
		for _, w := range ws {
			if w.leaf != m.srv.Name {
				continue
			}
			if _, at := w.held(); at.Before(restartedAt) {
				return fmt.Errorf("watcher on %s: no X509 context since the restart: %w", w.leaf, errNotYet)
			}
			if err := w.holdsAll(); err != nil {
				return err
			}
		}
	}
	return nil
}

// summary is "n=N p50=… max=…" of ds.
func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%.2fs max=%.2fs", len(s), s[(len(s)-1)/2].Seconds(), s[len(s)-1].Seconds())
}
