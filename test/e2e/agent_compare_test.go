package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// createEntriesAPI registers n entries under parent through the admin API
// (the CLI would take a process per entry), all matching this process's uid.
func createEntriesAPI(t *testing.T, socket string, parent spiffeid.ID, prefix string, n int) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := entryv1.NewEntryClient(conn)
	for start := 0; start < n; start += 500 {
		var batch []*types.Entry
		for i := start; i < min(start+500, n); i++ {
			batch = append(batch, &types.Entry{
				ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: parent.Path()},
				SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: fmt.Sprintf("%s/%d", prefix, i)},
				Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}},
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: batch})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Results {
			if r.Status.Code != 0 {
				t.Fatalf("create entry: %v", r.Status)
			}
		}
	}
}

// waitSVIDCount polls the Workload API until it returns n X509-SVIDs.
func waitSVIDCount(t *testing.T, socket string, n int) {
	t.Helper()
	poll(t, 3*time.Minute, fmt.Sprintf("%d X509-SVIDs at %s", n, socket), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+socket))
		if err != nil {
			return err
		}
		if len(svids) != n {
			return fmt.Errorf("%d SVIDs", len(svids))
		}
		return nil
	})
}

// fetchLatencies times FetchX509SVID round trips on one client connection.
func fetchLatencies(t *testing.T, socket string, calls int) []time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	out := make([]time.Duration, 0, calls)
	for range calls {
		start := time.Now()
		if _, err := client.FetchX509SVID(ctx); err != nil {
			t.Fatalf("FetchX509SVID at %s: %v", socket, err)
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out
}

func pct(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }

// TestAgentsSideBySide runs spire-agent v1.13.3 and arbor's agent against the
// same arbor server in one run: both must deliver every SVID (the test's
// assertions); the initial-sync time and FetchX509SVID latencies of both are
// logged as ratios. ARBOR_AGENT_COMPARE_ENTRIES (default 200) sets the
// number of entries for the initial sync; the figure uses 1000.
func TestAgentsSideBySide(t *testing.T) {
	requireSetup(t)
	n := 200
	if v, err := strconv.Atoi(os.Getenv("ARBOR_AGENT_COMPARE_ENTRIES")); err == nil && v > 0 {
		n = v
	}
	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	_, bundlePEM := a.bundlePEM(t)

	// Initial sync of n entries: time from start to all SVIDs served.
	spireAlias, arborAlias := mustID(t, "/host/spire-sync"), mustID(t, "/host/arbor-sync")
	spireTok, arborTok := a.generateToken(t, spireAlias), a.generateToken(t, arborAlias)
	createEntriesAPI(t, a.adminSock, spireAlias, "/spire-sync", n)
	createEntriesAPI(t, a.adminSock, arborAlias, "/arbor-sync", n)

	start := time.Now()
	spireAg := startAgent(t, a, spireTok)
	waitSVIDCount(t, spireAg.socket, n)
	spireSync := time.Since(start)

	start = time.Now()
	arborAg := startArborAgent(t, a.addr(), bundlePEM, arborTok)
	waitSVIDCount(t, arborAg.socket, n)
	arborSync := time.Since(start)
	t.Logf("initial sync of %d entries (start to all SVIDs served): spire-agent %v, arbor agent %v, ratio arbor/spire %.2f",
		n, spireSync.Round(time.Millisecond), arborSync.Round(time.Millisecond), arborSync.Seconds()/spireSync.Seconds())
	spireAg.proc.stop(t)
	arborAg.proc.stop(t)

	// FetchX509SVID latency with one entry each, measured alternately.
	spireAlias, arborAlias = mustID(t, "/host/spire-lat"), mustID(t, "/host/arbor-lat")
	spireTok, arborTok = a.generateToken(t, spireAlias), a.generateToken(t, arborAlias)
	createEntriesAPI(t, a.adminSock, spireAlias, "/spire-lat", 1)
	createEntriesAPI(t, a.adminSock, arborAlias, "/arbor-lat", 1)
	spireAg = startAgent(t, a, spireTok)
	arborAg = startArborAgent(t, a.addr(), bundlePEM, arborTok)
	waitSVIDCount(t, spireAg.socket, 1)
	waitSVIDCount(t, arborAg.socket, 1)
	var sp, ar []time.Duration
	for range 3 {
		sp = append(sp, fetchLatencies(t, spireAg.socket, 100)...)
		ar = append(ar, fetchLatencies(t, arborAg.socket, 100)...)
	}
	slices.Sort(sp)
	slices.Sort(ar)
	t.Logf("FetchX509SVID round trip, 300 calls each: spire-agent p50 %v p99 %v; arbor agent p50 %v p99 %v; ratio arbor/spire p50 %.2f p99 %.2f",
		pct(sp, .5), pct(sp, .99), pct(ar, .5), pct(ar, .99),
		pct(ar, .5).Seconds()/pct(sp, .5).Seconds(), pct(ar, .99).Seconds()/pct(sp, .99).Seconds())
}
