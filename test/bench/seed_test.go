package bench

import (
	"testing"
	"time"
)

// BenchmarkSeedEntries creates registration entries through the admin
// socket of an in-process server (SQLite), 500 per BatchCreateEntry, one
// call at a time, and reports entries/s: b.N batches of 500.
func BenchmarkSeedEntries(b *testing.B) {
	e := startServer(b, nil)
	b.ResetTimer()
	start := time.Now()
	e.seed(0, b.N*500, 0)
	b.ReportMetric(float64(b.N*500)/time.Since(start).Seconds(), "entries/s")
}
