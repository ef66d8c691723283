package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
)

// agentFor creates a join token and n entries for it (the first one
// selecting this process's uid), and returns a configured, unstarted agent.
func (e *env) agentFor(n int) (agent.Config, string) {
	ctx := context.Background()
	jt, err := agentv1.NewAgentClient(e.admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	check(e.b, err)
	parent := &types.SPIFFEID{TrustDomain: td.Name(), Path: "/spire/agent/join_token/" + jt.Value}
	for start := 0; start < n; start += 500 {
		var batch []*types.Entry
		for i := start; i < min(start+500, n); i++ {
			uid := strconv.Itoa(100000 + i)
			if i == 0 {
				uid = strconv.Itoa(os.Getuid())
			}
			batch = append(batch, &types.Entry{
				ParentId:  parent,
				SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: fmt.Sprintf("/agentbench/%s/%d", jt.Value[:8], i)},
				Selectors: []*types.Selector{{Type: "unix", Value: "uid:" + uid}},
			})
		}
		resp, err := entryv1.NewEntryClient(e.admin).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: batch})
		check(e.b, err)
		for _, r := range resp.Results {
			if r.Status.Code != 0 {
				e.b.Fatalf("creating entry: %v", r.Status)
			}
		}
	}
	dir, err := os.MkdirTemp("", "arbag")
	check(e.b, err)
	e.b.Cleanup(func() { os.RemoveAll(dir) })
	att, err := unix.New(unix.Config{})
	check(e.b, err)
	return agent.Config{
		TrustDomain: td, ServerAddress: e.addr, TrustBundle: e.bundle.X509Authorities(),
		DataDir: filepath.Join(dir, "data"), SocketPath: filepath.Join(dir, "api.sock"), JoinToken: jt.Value,
		WorkloadAttestors: []agent.WorkloadAttestor{att},
	}, "unix://" + filepath.Join(dir, "api.sock")
}

// runUntilReady starts the agent and returns how long attestation plus the
// first full sync (every SVID minted and cached) took.
func (e *env) runUntilReady(cfg agent.Config) (*agent.Agent, time.Duration) {
	a, err := agent.New(cfg)
	check(e.b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- a.Run(ctx) }()
	e.b.Cleanup(func() { cancel(); <-done })
	select {
	case <-a.Ready():
	case err := <-done:
		e.b.Fatalf("agent stopped: %v", err)
	case <-time.After(5 * time.Minute):
		e.b.Fatal("agent not ready")
	}
	return a, time.Since(start)
}

// BenchmarkAgentInitialSync measures the time from agent start to every
// SVID cached, and the heap per cached SVID, at 1k and 10k entries. The
// baseline is the same agent with a single entry, in the same run.
func BenchmarkAgentInitialSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			e := startServer(b, nil)
			base, _ := e.agentFor(1)
			_, baseline := e.runUntilReady(base)
			cfg, _ := e.agentFor(n)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			rssBefore, _ := rssBytes(os.Getpid())
			b.ResetTimer()
			a, d := e.runUntilReady(cfg)
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			rssAfter, _ := rssBytes(os.Getpid())
			runtime.KeepAlive(a)
			b.ReportMetric(float64(d.Milliseconds()), "ms-to-all-cached")
			b.ReportMetric(float64(baseline.Milliseconds()), "ms-baseline-1-entry")
			b.ReportMetric(float64(n)/d.Seconds(), "svids/s")
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heap-B/svid")
			b.ReportMetric(float64(rssAfter-rssBefore)/float64(n), "rss-B/svid")
		})
	}
}

// BenchmarkAgentFetchX509SVID measures the Workload API round trip
// (FetchX509SVID on the Unix socket, unix attestation included) with 1,000
// cached entries, reporting p50/p99. The side-by-side spire-agent run is
// not automated yet (see docs/agent.md).
func BenchmarkAgentFetchX509SVID(b *testing.B) {
	e := startServer(b, nil)
	cfg, sock := e.agentFor(1000)
	e.runUntilReady(cfg)
	ctx := context.Background()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(sock))
	check(b, err)
	defer c.Close()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		if _, err := c.FetchX509SVID(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
