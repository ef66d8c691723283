package ha

import (
	"context"
	"fmt"
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

const outageFor = 30 * time.Second

// TestPostgresOutage stops the PostgreSQL under three replicas for 30s
// (pg_ctl stop, fast mode: what an operator's restart does) while 50
// simulated agents sync and mint X509-SVIDs, three arbor agents keep their
// workloads' 30s SVIDs fresh and a writer tries to register entries on
// every replica. No replica exits, no sync or SVID call fails, every
// workload fetch succeeds and its SVID renews during the outage, every
// write is refused with Unavailable, and once PostgreSQL is back every
// write acknowledged before or after it is present on every replica.
func TestPostgresOutage(t *testing.T) {
	ctx := testkit.Context(t, 8*time.Minute)
	pg := testkit.StartPostgres(t)
	tr := newTier(t, 3, pg.DSN(), "")
	tr.startAll()

	gen := tr.simulatedAgents(ctx, tr.addrs())
	agents, sockets := tr.startFleet(t)

	// One write acknowledged before the outage.
	written := []string{tr.writeEntry(t, 1, "/acked/before")}
	// Counted once every replica has polled what the others wrote.
	var entriesBefore, agentsBefore int32
	testkit.Poll(t, 30*time.Second, "every replica counting the same entries and agents", func() error {
		entriesBefore, agentsBefore = tr.counts(1)
		for k := 2; k <= len(tr.replicas); k++ {
			if e, a := tr.counts(k); e != entriesBefore || a != agentsBefore || e != 507 || a != 53 {
				return fmt.Errorf("replica %d: %d entries and %d agents, replica 1 %d and %d (want 507 and 53)", k, e, a, entriesBefore, agentsBefore)
			}
		}
		return nil
	})

	workloads := watchWorkloads(sockets, 200*time.Millisecond)
	type loadResult struct {
		rep *loadgen.Report
		err error
	}
	loadDone := make(chan loadResult, 1)
	go func() {
		rep, err := gen.Run(ctx, loadgen.Load{Name: "postgres outage", Interval: time.Second, Duration: outageFor + 10*time.Second, Sync: true, X509: true})
		loadDone <- loadResult{rep, err}
	}()
	time.Sleep(3 * time.Second)

	pg.Stop(t)
	stoppedAt := time.Now()
	serialsAtStop := map[spiffeid.ID]int{}
	for _, ag := range agents {
		for _, id := range ag.workloads {
			serialsAtStop[id] = workloads.distinctSVIDs(id)
		}
	}
	var refused, attempts int
	for i := 0; time.Since(stoppedAt) < outageFor; i++ {
		k := i%len(tr.replicas) + 1
		attempts++
		id, err := tr.tryWriteEntry(ctx, k, fmt.Sprintf("/outage/%d", i))
		switch {
		case err == nil:
			// Acknowledged: it must survive (a connection that was still
			// open may commit before the stop completes).
			written = append(written, id)
		case status.Code(err) == codes.Unavailable:
			refused++
		default:
			t.Errorf("write on replica %d during the outage: %v, want Unavailable", k, err)
		}
		// Each replica still serves its bundle from memory.
		if _, err := tr.replicas[k-1].proc.Bundle(ctx); err != nil {
			t.Errorf("replica %d bundle during the outage: %v", k, err)
		}
		time.Sleep(2 * time.Second)
	}
	renewedDuring := 0
	for id, n := range serialsAtStop {
		if workloads.distinctSVIDs(id) > n {
			renewedDuring++
		}
	}
	pg.Start(t)
	restartedAt := time.Now()

	// A write after the outage: the first one a replica acknowledges.
	var after string
	testkit.Poll(t, 60*time.Second, "replica 2 accepting writes again", func() error {
		id, err := tr.tryWriteEntry(ctx, 2, "/acked/after")
		if err != nil {
			return err
		}
		after = id
		return nil
	})
	written = append(written, after)
	writable := time.Since(restartedAt)
	fetches, failures := workloads.finish()
	res := <-loadDone
	if res.err != nil {
		t.Fatalf("load: %v", res.err)
	}

	t.Logf("PostgreSQL stopped %.0fs: %d writes tried, %d refused Unavailable; writes accepted again %s after the restart",
		outageFor.Seconds(), attempts, refused, writable.Round(time.Millisecond))
	t.Logf("workloads: %d fetches, %d failures; %d of %d workload SVIDs renewed during the outage", fetches, len(failures), renewedDuring, len(serialsAtStop))
	for _, name := range []string{loadgen.RPCSync, loadgen.RPCX509} {
		if s := res.rep.RPCs[name]; s != nil {
			t.Logf("simulated agents: %s calls=%d items=%d p50=%.1fms p99=%.1fms errors: %s", name, s.Calls, s.Items, s.P50MS, s.P99MS, errorsByCode(s.Errors))
		}
	}

	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}
	if refused == 0 {
		t.Error("no write was refused: the outage tested nothing")
	}
	if renewedDuring != len(serialsAtStop) {
		t.Errorf("%d of %d workload SVIDs renewed during the %s outage (30s SVIDs renew every 15s)", renewedDuring, len(serialsAtStop), outageFor)
	}
	for _, name := range []string{loadgen.RPCSync, loadgen.RPCX509} {
		s := res.rep.RPCs[name]
		if s == nil || s.Items == 0 {
			t.Errorf("simulated agents: no successful %s", name)
		} else if len(s.Errors) != 0 {
			t.Errorf("simulated agents: %s failed during the outage: %s", name, errorsByCode(s.Errors))
		}
	}
	for _, ag := range agents {
		ag.checkNoReattestation(t)
	}
	// Every acknowledged write is on every replica once they have polled.
	for k := 1; k <= len(tr.replicas); k++ {
		if err := tr.replicas[k-1].proc.WaitReady(ctx, 30*time.Second); err != nil {
			t.Errorf("replica %d after the outage: %v", k, err)
			continue
		}
		testkit.Poll(t, 30*time.Second, fmt.Sprintf("replica %d holding every acknowledged write", k), func() error {
			for _, id := range written {
				if _, err := entryv1.NewEntryClient(tr.admin(k)).GetEntry(ctx, &entryv1.GetEntryRequest{Id: id}); err != nil {
					return fmt.Errorf("entry %s: %v", id, err)
				}
			}
			return nil
		})
		e, a := tr.counts(k)
		if want := entriesBefore + int32(len(written)-1); e != want || a != agentsBefore {
			t.Errorf("replica %d after the outage: %d entries and %d agents, want %d and %d", k, e, a, want, agentsBefore)
		}
	}
}

// tryWriteEntry registers an entry on replica k and returns its ID, or the
// error (the call's, or the entry result's status as an error).
func (tr *tier) tryWriteEntry(ctx context.Context, k int, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := entryv1.NewEntryClient(tr.admin(k)).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
		ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: "/writer"},
		SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: path},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:12345"}},
	}}})
	if err != nil {
		return "", err
	}
	r := resp.Results[0]
	if c := codes.Code(r.GetStatus().GetCode()); c != codes.OK {
		return "", status.Error(c, r.GetStatus().GetMessage())
	}
	return r.GetEntry().GetId(), nil
}

// writeEntry is tryWriteEntry failing the test on error.
func (tr *tier) writeEntry(t *testing.T, k int, path string) string {
	t.Helper()
	id, err := tr.tryWriteEntry(context.Background(), k, path)
	if err != nil {
		t.Fatalf("write on replica %d: %v", k, err)
	}
	return id
}
