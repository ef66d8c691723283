package bench

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/datastore/datastoretest"
	"github.com/arborid/arbor/internal/datastore/sqlite"
	"github.com/arborid/arbor/internal/entrycache"
)

// BenchmarkStartupLoad measures what a server does at start with a
// datastore of ARBOR_BENCH_STARTUP_ENTRIES entries (default 100,000;
// SQLite): list every entry and node and build the in-memory index. It
// reports entries/s and the live heap per entry once loaded. Set
// ARBOR_BENCH_STARTUP_DB to keep the seeded database between runs.
func BenchmarkStartupLoad(b *testing.B) {
	n := 100_000
	if v := os.Getenv("ARBOR_BENCH_STARTUP_ENTRIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	path := os.Getenv("ARBOR_BENCH_STARTUP_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "arbor.db")
	}
	ctx := context.Background()
	_, statErr := os.Stat(path)
	s, err := sqlite.Open(ctx, path)
	check(b, err)
	b.Cleanup(func() { s.Close() })
	if statErr != nil {
		start := time.Now()
		datastoretest.Seed(b, s, n)
		b.Logf("seeded %d entries in %v", n, time.Since(start))
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var c *entrycache.Cache
	b.ResetTimer()
	for b.Loop() {
		entries, err := s.ListEntries(ctx)
		check(b, err)
		nodes, err := s.ListNodes(ctx)
		check(b, err)
		c = entrycache.New(td)
		c.Reset(entries, nodes)
	}
	b.StopTimer()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(c.Count()), "heap-B/entry")
}
