package datastoretest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/arborid/arbor/internal/datastore"
)

// benchEntry is a typical workload entry: three selectors, a shared parent.
func benchEntry(prefix string, i int) *datastore.Entry {
	return &datastore.Entry{
		SPIFFEID:    id(fmt.Sprintf("/ns/%d/sa/%s-%d", i%100, prefix, i)),
		ParentID:    id(fmt.Sprintf("/spire/agent/k8s_psat/node-%d", i%500)),
		Selectors:   sels(fmt.Sprintf("k8s:ns:ns-%d", i%100), fmt.Sprintf("k8s:sa:%s-%d", prefix, i), "k8s:container-name:app"),
		X509SVIDTTL: 3600,
		DNSNames:    []string{fmt.Sprintf("%s-%d.example.org", prefix, i)},
	}
}

// Seed creates n benchmark entries in batches of 1000.
func Seed(tb testing.TB, s datastore.Store, n int) {
	tb.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		batch := make([]*datastore.Entry, 0, 1000)
		for i := start; i < min(start+1000, n); i++ {
			batch = append(batch, benchEntry("seed", i))
		}
		if _, errs := s.CreateEntries(ctx, batch); errors.Join(errs...) != nil {
			tb.Fatalf("CreateEntries() error = %v", errors.Join(errs...))
		}
	}
}

// BenchListEntries measures loading n entries, as a server does at start;
// it reports entries/s.
func BenchListEntries(b *testing.B, s datastore.Store, n int) {
	Seed(b, s, n)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		list, err := s.ListEntries(ctx)
		if err != nil {
			b.Fatalf("ListEntries() error = %v", err)
		}
		if len(list) != n {
			b.Fatalf("ListEntries() = %d entries, want %d", len(list), n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchCreateEntries measures CreateEntries of batch new entries per call; it
// reports entries/s.
func BenchCreateEntries(b *testing.B, s datastore.Store, batch int) {
	ctx := context.Background()
	round := 0
	for b.Loop() {
		entries := make([]*datastore.Entry, batch)
		for i := range entries {
			entries[i] = benchEntry(fmt.Sprintf("r%d", round), i)
		}
		round++
		if _, errs := s.CreateEntries(ctx, entries); errors.Join(errs...) != nil {
			b.Fatalf("CreateEntries() error = %v", errors.Join(errs...))
		}
	}
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "entries/s")
}
