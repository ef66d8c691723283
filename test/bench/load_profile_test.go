package bench

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

// startLoadServer runs an in-process arbor server (SQLite, or PostgreSQL with
// backend "postgres") and returns a load generator configuration for it. The
// server and the generator share this process, so a CPU profile taken with
// `go test -cpuprofile` shows where the server's time goes (functions under
// internal/) next to the client's.
func startLoadServer(b *testing.B, backend string) loadgen.Config {
	b.Helper()
	dir := testkit.ShortDir(b)
	cfg := server.Config{Name: "load", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "a.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true}
	if backend == "postgres" {
		cfg.Datastore, cfg.PostgresDSN = "postgres", postgresDSN(b)
	}
	srv := testkit.StartServer(b, cfg)
	return loadgen.Config{AdminSocket: cfg.AdminSocket, ServerAddr: srv.AgentAddr().String(), TrustDomain: td,
		ServerPID: os.Getpid(), SeedConcurrency: 4}
}

func setupLoad(b *testing.B, cfg loadgen.Config) *loadgen.Generator {
	b.Helper()
	gen, err := loadgen.New(cfg)
	check(b, err)
	b.Cleanup(func() { gen.Close() })
	setup, err := gen.Setup(context.Background())
	check(b, err)
	if setup.Errors != 0 {
		b.Fatalf("setup had %d errors", setup.Errors)
	}
	return gen
}

func runLoad(b *testing.B, gen *loadgen.Generator, load loadgen.Load) *loadgen.Report {
	b.Helper()
	rep, err := gen.Run(context.Background(), load)
	check(b, err)
	if rep.Errors != 0 {
		b.Fatalf("%s: %d errors: %+v", load.Name, rep.Errors, rep.RPCs)
	}
	return rep
}

// BenchmarkLoadIssuance drives X509-SVID issuance through the load generator
// (16 agents, 10 entries each, batches of 10) against an in-process arbor
// and reports it against the raw signing limit measured just before. The
// process's CPU per SVID covers client and server together.
//
//	go test ./test/bench -run '^$' -bench LoadIssuance -benchtime 1x -cpuprofile /tmp/issue.pprof
func BenchmarkLoadIssuance(b *testing.B) {
	cfg := startLoadServer(b, "sqlite")
	cfg.Agents, cfg.Entries = 16, 1000
	gen := setupLoad(b, cfg)
	raw, err := loadgen.RawSigningRate(3 * time.Second)
	check(b, err)
	b.ResetTimer()
	rep := runLoad(b, gen, loadgen.Load{Name: "x509", Duration: 5 * time.Second, X509: true})
	b.StopTimer()
	items := rep.RPCs[loadgen.RPCX509].Items
	b.ReportMetric(raw.PerSecond, "raw_svids/s")
	b.ReportMetric(rep.X509PerSecond, "svids/s")
	b.ReportMetric(rep.X509PerSecond/raw.PerSecond, "ratio_to_raw")
	b.ReportMetric(rep.Server.CPUSeconds*1e6/float64(items), "process_cpu_us/svid")
	b.ReportMetric(raw.CPUMicrosPerSVID, "raw_cpu_us/svid")
	b.ReportMetric(rep.RPCs[loadgen.RPCX509].P99MS, "p99_ms")
}

var heapProfile = flag.String("load.heapprofile", "", "BenchmarkLoadSync writes an in-use heap profile here after seeding (the server holds the entries; the client is small)")

// BenchmarkLoadSync reports agent sync latency and process CPU per sync at
// 1k and 100k entries (16 agents, 10 entries each, every 250ms), on SQLite.
//
//	go test ./test/bench -run '^$' -bench LoadSync -benchtime 1x -cpuprofile /tmp/sync.pprof
//	go test ./test/bench -run '^$' -bench LoadSync/100k -benchtime 1x -args -load.heapprofile /tmp/heap.pprof
func BenchmarkLoadSync(b *testing.B) {
	for _, tc := range []struct {
		name    string
		entries int
	}{{"1k", 1000}, {"100k", 100_000}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := startLoadServer(b, "sqlite")
			cfg.Agents, cfg.Entries = 16, tc.entries
			gen := setupLoad(b, cfg)
			if *heapProfile != "" {
				runtime.GC()
				f, err := os.Create(*heapProfile)
				check(b, err)
				check(b, pprof.WriteHeapProfile(f))
				check(b, f.Close())
			}
			b.ResetTimer()
			rep := runLoad(b, gen, loadgen.Load{Name: "sync", Interval: 250 * time.Millisecond, Duration: 5 * time.Second, Sync: true})
			b.StopTimer()
			s := rep.RPCs[loadgen.RPCSync]
			b.ReportMetric(s.P50MS*1000, "p50_us")
			b.ReportMetric(s.P99MS*1000, "p99_us")
			b.ReportMetric(rep.ServerCPUPerSyncMS*1000, "process_cpu_us/sync")
		})
	}
}
