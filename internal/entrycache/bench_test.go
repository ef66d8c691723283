package entrycache

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func loadedCache(b *testing.B, total int) (*Cache, population) {
	b.Helper()
	p := makePopulation(total)
	c := New(testTD)
	c.Reset(p.entries, p.nodes)
	if got := len(c.AuthorizedEntries(p.agent)); got != p.wantAuthorized {
		b.Fatalf("AuthorizedEntries at %d entries returned %d, want %d", total, got, p.wantAuthorized)
	}
	return c, p
}

// BenchmarkAuthorizedEntries measures one agent's sync (10 own entries plus a
// node alias with 5 children) against caches of 10k and 100k entries.
func BenchmarkAuthorizedEntries(b *testing.B) {
	for _, total := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", total), func(b *testing.B) {
			c, p := loadedCache(b, total)
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				n = len(c.AuthorizedEntries(p.agent))
			}
			b.ReportMetric(float64(n), "authorized/op")
		})
	}
}

// BenchmarkAuthorizedEntriesScaling interleaves calls against the 10k and
// 100k caches in the same run and reports the per-call cost ratio
// (target: at most 1.5).
func BenchmarkAuthorizedEntriesScaling(b *testing.B) {
	small, ps := loadedCache(b, 10_000)
	large, pl := loadedCache(b, 100_000)
	const batch = 256
	var tSmall, tLarge time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		for range batch {
			small.AuthorizedEntries(ps.agent)
		}
		mid := time.Now()
		for range batch {
			large.AuthorizedEntries(pl.agent)
		}
		tSmall += mid.Sub(start)
		tLarge += time.Since(mid)
	}
	calls := float64(b.N * batch)
	b.ReportMetric(float64(tSmall.Nanoseconds())/calls, "ns/call-10k")
	b.ReportMetric(float64(tLarge.Nanoseconds())/calls, "ns/call-100k")
	b.ReportMetric(float64(tLarge)/float64(tSmall), "ratio-100k/10k")
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemoryPerEntry reports the heap held per entry at 100k entries:
// B/entry counts everything (the entries themselves, loaded with one string
// allocation per field as from a store, plus every index), index-B/entry only
// what the cache adds over the bare entries.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const total = 100_000
	var perEntry, indexPerEntry float64
	for b.Loop() {
		base := heapAlloc()
		p := makePopulation(total)
		bare := heapAlloc()
		c := New(testTD)
		c.Reset(p.entries, p.nodes)
		p.entries, p.nodes = nil, nil
		after := heapAlloc()
		perEntry = float64(int64(after)-int64(base)) / total
		indexPerEntry = float64(int64(after)-int64(bare)) / total
		runtime.KeepAlive(c)
	}
	b.ReportMetric(perEntry, "B/entry")
	b.ReportMetric(indexPerEntry, "index-B/entry")
}
