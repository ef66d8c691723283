package scale

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// TestEntriesAtScale runs one `arbor server` process per datastore (SQLite,
// then PostgreSQL) and, through its admin socket:
//
//  1. seeds a base of entries (10k, or half the total when that is
//     smaller) with one simulated agent authorized for 10 of them, and
//     measures that agent's sync;
//  2. loads the rest up to ARBOR_SCALE_ENTRIES (default 20,000; the full
//     form is 1,000,000) with BatchCreateEntry, 500 per call and 4 calls in
//     flight, entries of one and of three selectors over 1,000 parents;
//  3. measures the same agent's sync again, against the whole total;
//  4. writes history: updates 2% of the entries and deletes 0.5%;
//  5. kills the server with SIGKILL and starts it again on the same state.
//
// It asserts that every write was acknowledged without error, that after
// the crash every acknowledged write is there (the count, the updated
// fields, the deletions) and that the agent syncs its 10 entries again with
// the SVID it had before the crash (no new attestation). It logs the load
// rate, the RSS per entry, the start-up times and the sync cost at the base
// and at the total: the figures of docs/perf/million-entries.md.
func TestEntriesAtScale(t *testing.T) {
	n := envInt(t, "ARBOR_SCALE_ENTRIES", 20000)
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ds := `datastore "sqlite" {}`
			if backend == "postgres" {
				ds = fmt.Sprintf("datastore \"postgres\" {\n    dsn = %q\n  }", testkit.PostgresDSN(t))
			}
			runScale(t, ds, n)
		})
	}
}

// figures are what one run measured.
type figures struct {
	entries                int
	loadPerSecond          float64
	rssEmpty, rssLoaded    int64
	rssSettled             int64
	rssRestarted           int64
	readyEmpty, readyAfter time.Duration
	syncBase, syncTotal    *loadgen.Report
	base                   int
}

func runScale(t *testing.T, datastore string, n int) {
	ctx := testkit.Context(t, 5*time.Minute+time.Duration(n)*2*time.Millisecond)
	srv := newServer(t, datastore)
	f := figures{entries: n, base: min(10000, n/2)}
	f.readyEmpty = srv.start(time.Minute)
	f.rssEmpty = srv.rss(2 * time.Second)
	admin := srv.dialAdmin()
	entries := entryv1.NewEntryClient(admin)

	gen, err := loadgen.New(loadgen.Config{
		AdminSocket: srv.admin, ServerAddr: srv.addr(), TrustDomain: td,
		Agents: 1, Entries: f.base, EntriesPerAgent: 10, OtherParents: 100,
		SeedConcurrency: 4, ServerPID: srv.pid(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gen.Close() })
	setup, err := gen.Setup(ctx)
	if err != nil {
		t.Fatalf("seeding the base: %v", err)
	}
	if setup.Errors != 0 {
		t.Fatalf("seeding the base: %d errors", setup.Errors)
	}
	syncLoad := loadgen.Load{Name: "sync", Sync: true, Iterations: 2000}
	f.syncBase = runSync(ctx, t, gen, syncLoad)

	begin := time.Now()
	seedRest(ctx, t, entries, f.base, n)
	f.loadPerSecond = float64(n-f.base) / time.Since(begin).Seconds()
	f.rssLoaded = srv.rss(2 * time.Second)
	f.syncTotal = runSync(ctx, t, gen, syncLoad)
	if got := countEntries(ctx, t, entries); got != n {
		t.Fatalf("CountEntries = %d after loading, want %d", got, n)
	}
	// Right after the load the heap still holds the load's garbage, which
	// the Go runtime returns to the OS over the next seconds.
	f.rssSettled = srv.settledRSS(time.Minute)

	updated, deleted := writeHistory(ctx, t, entries, n/50, n/200)
	want := n - len(deleted)

	srv.kill()
	f.readyAfter = srv.start(5 * time.Minute)
	f.rssRestarted = srv.rss(2 * time.Second)

	// Every acknowledged write outlived the crash.
	if got := countEntries(ctx, t, entries); got != want {
		t.Errorf("CountEntries = %d after the crash, want %d", got, want)
	}
	checkHistory(ctx, t, entries, updated, deleted)
	// The agent syncs with the SVID it was issued before the crash.
	after := runSync(ctx, t, gen, loadgen.Load{Name: "sync after restart", Sync: true, Iterations: 20})
	if st := after.RPCs[loadgen.RPCSync]; st == nil || st.Calls != 20 {
		t.Errorf("sync after restart: %+v, want 20 calls", st)
	}

	t.Logf("%d entries: loaded (beyond the first %d) at %.0f entries/s; RSS empty %.1f MiB, loaded %.1f MiB (%.0f B/entry), settled %.1f MiB (%.0f B/entry), after the restart %.1f MiB (%.0f B/entry)",
		n, f.base, f.loadPerSecond, mib(f.rssEmpty), mib(f.rssLoaded), float64(f.rssLoaded-f.rssEmpty)/float64(n),
		mib(f.rssSettled), float64(f.rssSettled-f.rssEmpty)/float64(n),
		mib(f.rssRestarted), float64(f.rssRestarted-f.rssEmpty)/float64(n))
	t.Logf("start-up to ready: empty %v, with %d entries and %d+ events of history after SIGKILL %v",
		f.readyEmpty.Round(time.Millisecond), want, n+len(updated)+len(deleted), f.readyAfter.Round(time.Millisecond))
	b, a := f.syncBase.RPCs[loadgen.RPCSync], f.syncTotal.RPCs[loadgen.RPCSync]
	t.Logf("one agent's sync (10 entries, %d back to back): at %d entries p50 %.3f ms p99 %.3f ms, server CPU %.3f ms/sync; at %d entries p50 %.3f ms p99 %.3f ms, server CPU %.3f ms/sync; ratio p50 %.2f, CPU %.2f",
		syncLoad.Iterations, f.base, b.P50MS, b.P99MS, f.syncBase.ServerCPUPerSyncMS,
		n, a.P50MS, a.P99MS, f.syncTotal.ServerCPUPerSyncMS, a.P50MS/b.P50MS, f.syncTotal.ServerCPUPerSyncMS/f.syncBase.ServerCPUPerSyncMS)
}

// runSync runs a sync-only load and fails the test on any error or on a
// sync that did not return the agent's 10 entries.
func runSync(ctx context.Context, t *testing.T, gen *loadgen.Generator, load loadgen.Load) *loadgen.Report {
	t.Helper()
	rep, err := gen.Run(ctx, load)
	if err != nil {
		t.Fatalf("%s: %v", load.Name, err)
	}
	st := rep.RPCs[loadgen.RPCSync]
	if rep.Errors != 0 || st == nil || st.Calls == 0 {
		t.Fatalf("%s: %d errors, sync stats %+v", load.Name, rep.Errors, st)
	}
	if st.Items != 10*st.Calls {
		t.Fatalf("%s: %d entries over %d syncs, want 10 each", load.Name, st.Items, st.Calls)
	}
	return rep
}

// seedRest creates entries from..n-1, 500 per BatchCreateEntry with 4 calls
// in flight, and fails the test on any error.
func seedRest(ctx context.Context, t *testing.T, client entryv1.EntryClient, from, n int) {
	t.Helper()
	const batch, inFlight = 500, 4
	starts := make(chan int)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for start := range starts {
				var req entryv1.BatchCreateEntryRequest
				req.OutputMask = &types.EntryMask{}
				for i := start; i < min(start+batch, n); i++ {
					req.Entries = append(req.Entries, scaleEntry(i))
				}
				cctx, cancel := callCtx(ctx)
				resp, err := client.BatchCreateEntry(cctx, &req)
				cancel()
				if err == nil {
					for _, r := range resp.Results {
						if c := codes.Code(r.GetStatus().GetCode()); c != codes.OK {
							err = status.Error(c, r.GetStatus().GetMessage())
							break
						}
					}
				}
				if err != nil {
					err = fmt.Errorf("BatchCreateEntry of entries %d..: %w", start, err)
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	last := time.Now()
	for start := from; start < n && failed.Load() == nil; start += batch {
		if time.Since(last) > 10*time.Second {
			t.Logf("loaded %d/%d entries", start, n)
			last = time.Now()
		}
		starts <- start
	}
	close(starts)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(*err)
	}
}

// scaleEntry is entry i of the load: one unix selector, or three k8s ones
// for every other entry, under one of 1,000 agents that never connect.
func scaleEntry(i int) *types.Entry {
	e := &types.Entry{
		ParentId: &types.SPIFFEID{TrustDomain: td.Name(), Path: fmt.Sprintf("/spire/agent/join_token/scale-%d", i%1000)},
		SpiffeId: &types.SPIFFEID{TrustDomain: td.Name(), Path: fmt.Sprintf("/scale/w/%d", i)},
	}
	if i%2 == 0 {
		e.Selectors = []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}}
	} else {
		e.Selectors = []*types.Selector{
			{Type: "k8s", Value: fmt.Sprintf("ns:ns-%d", i%50)},
			{Type: "k8s", Value: fmt.Sprintf("sa:sa-%d", i)},
			{Type: "k8s", Value: fmt.Sprintf("pod-label:app:app-%d", i%200)},
		}
	}
	return e
}

func countEntries(ctx context.Context, t *testing.T, client entryv1.EntryClient) int {
	t.Helper()
	cctx, cancel := callCtx(ctx)
	defer cancel()
	resp, err := client.CountEntries(cctx, &entryv1.CountEntriesRequest{})
	if err != nil {
		t.Fatalf("CountEntries: %v", err)
	}
	return int(resp.Count)
}

// writeHistory updates the hint of the first `updates` entries in ID order
// and then deletes the `deletes` after them, 500 per call, and returns the
// IDs of each.
func writeHistory(ctx context.Context, t *testing.T, client entryv1.EntryClient, updates, deletes int) (updated, deleted []string) {
	t.Helper()
	var ids []string
	token := ""
	for len(ids) < updates+deletes {
		cctx, cancel := callCtx(ctx)
		resp, err := client.ListEntries(cctx, &entryv1.ListEntriesRequest{PageSize: 1000, PageToken: token, OutputMask: &types.EntryMask{}})
		cancel()
		if err != nil {
			t.Fatalf("ListEntries: %v", err)
		}
		for _, e := range resp.Entries {
			ids = append(ids, e.Id)
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if len(ids) < updates+deletes {
		t.Fatalf("ListEntries returned %d entries, want at least %d", len(ids), updates+deletes)
	}
	updated, deleted = ids[:updates], ids[updates:updates+deletes]
	for start := 0; start < len(updated); start += 500 {
		var req entryv1.BatchUpdateEntryRequest
		req.InputMask = &types.EntryMask{Hint: true}
		req.OutputMask = &types.EntryMask{}
		for _, id := range updated[start:min(start+500, len(updated))] {
			req.Entries = append(req.Entries, &types.Entry{Id: id, Hint: "updated"})
		}
		cctx, cancel := callCtx(ctx)
		resp, err := client.BatchUpdateEntry(cctx, &req)
		cancel()
		if err != nil {
			t.Fatalf("BatchUpdateEntry: %v", err)
		}
		for _, r := range resp.Results {
			if r.Status.GetCode() != 0 {
				t.Fatalf("BatchUpdateEntry: %v", r.Status)
			}
		}
	}
	for start := 0; start < len(deleted); start += 500 {
		cctx, cancel := callCtx(ctx)
		resp, err := client.BatchDeleteEntry(cctx, &entryv1.BatchDeleteEntryRequest{Ids: deleted[start:min(start+500, len(deleted))]})
		cancel()
		if err != nil {
			t.Fatalf("BatchDeleteEntry: %v", err)
		}
		for _, r := range resp.Results {
			if r.Status.GetCode() != 0 {
				t.Fatalf("BatchDeleteEntry: %v", r.Status)
			}
		}
	}
	return updated, deleted
}

// checkHistory asserts that every updated entry has its new hint and every
// deleted one is gone.
func checkHistory(ctx context.Context, t *testing.T, client entryv1.EntryClient, updated, deleted []string) {
	t.Helper()
	for _, id := range updated {
		cctx, cancel := callCtx(ctx)
		e, err := client.GetEntry(cctx, &entryv1.GetEntryRequest{Id: id, OutputMask: &types.EntryMask{Hint: true}})
		cancel()
		if err != nil {
			t.Fatalf("GetEntry(%s) after the crash: %v", id, err)
		}
		if e.GetHint() != "updated" {
			t.Fatalf("entry %s has hint %q after the crash, want the acknowledged update", id, e.GetHint())
		}
	}
	for _, id := range deleted {
		cctx, cancel := callCtx(ctx)
		_, err := client.GetEntry(cctx, &entryv1.GetEntryRequest{Id: id})
		cancel()
		if status.Code(err) != codes.NotFound {
			t.Fatalf("deleted entry %s after the crash: %v, want NotFound", id, err)
		}
	}
}
