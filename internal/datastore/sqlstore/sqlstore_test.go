package sqlstore

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

func TestSchemaVersionMatchesMigrations(t *testing.T) {
	if SchemaVersion != len(migrations) {
		t.Errorf("SchemaVersion = %d, want len(migrations) = %d: raise it with every new migration", SchemaVersion, len(migrations))
	}
}

func TestRebind(t *testing.T) {
	tests := []struct {
		dollar bool
		in     string
		want   string
	}{
		{false, `SELECT a FROM t WHERE x = ? AND y = ?`, `SELECT a FROM t WHERE x = ? AND y = ?`},
		{true, `SELECT a FROM t WHERE x = ? AND y = ?`, `SELECT a FROM t WHERE x = $1 AND y = $2`},
		{true, `SELECT 1`, `SELECT 1`},
		{true, `(?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?)`, `($1, $2, $3), ($4, $5, $6), ($7, $8, $9), ($10, $11, $12)`},
	}
	for _, tt := range tests {
		s := &Store{d: Dialect{Dollar: tt.dollar}}
		if got := s.q(tt.in); got != tt.want {
			t.Errorf("q(%q) with Dollar=%v = %q, want %q", tt.in, tt.dollar, got, tt.want)
		}
	}
}

func TestDedupeKey(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	entry := func(parent, path string, sels ...selector.Selector) *datastore.Entry {
		return &datastore.Entry{ParentID: spiffeid.RequireFromPath(td, parent), SPIFFEID: spiffeid.RequireFromPath(td, path), Selectors: sels}
	}
	a1, b2 := selector.Selector{Type: "a", Value: "1"}, selector.Selector{Type: "b", Value: "2"}
	base := dedupeKey(entry("/p", "/s", a1, b2))
	tests := []struct {
		name  string
		entry *datastore.Entry
		same  bool
	}{
		{"reordered selectors", entry("/p", "/s", b2, a1), true},
		{"repeated selector", entry("/p", "/s", b2, a1, a1), true},
		{"other fields", &datastore.Entry{ParentID: spiffeid.RequireFromPath(td, "/p"), SPIFFEID: spiffeid.RequireFromPath(td, "/s"), Selectors: []selector.Selector{a1, b2}, Admin: true, Hint: "x"}, true},
		{"fewer selectors", entry("/p", "/s", a1), false},
		{"parent and spiffe id swapped", entry("/s", "/p", a1, b2), false},
		{"boundary moved between type and value", entry("/p", "/s", selector.Selector{Type: "a1", Value: ""}, b2), false},
		{"boundary moved between selectors", entry("/p", "/s", selector.Selector{Type: "a", Value: "1b"}, selector.Selector{Type: "2", Value: ""}), false},
	}
	for _, tt := range tests {
		if got := dedupeKey(tt.entry) == base; got != tt.same {
			t.Errorf("%s: dedupeKey equal to the base entry's = %v, want %v", tt.name, got, tt.same)
		}
	}
}

func TestBundleEncodingRoundTrip(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	in := &datastore.Bundle{
		TrustDomain:     td,
		X509Authorities: []datastore.X509Authority{{Cert: []byte{1, 2}, Tainted: true}, {Cert: []byte{3}}},
		JWTAuthorities:  []datastore.JWTAuthority{{KeyID: "k", PublicKey: []byte{4}, ExpiresAt: 10, Tainted: true}},
		RefreshHint:     60,
		SequenceNumber:  1 << 63,
	}
	data, err := encodeBundle(in)
	if err != nil {
		t.Fatalf("encodeBundle() error = %v", err)
	}
	out, err := decodeBundle(td, data)
	if err != nil {
		t.Fatalf("decodeBundle() error = %v", err)
	}
	if diff := cmp.Diff(in, out, cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b })); diff != "" {
		t.Errorf("decodeBundle(encodeBundle()) (-want +got):\n%s", diff)
	}
}
