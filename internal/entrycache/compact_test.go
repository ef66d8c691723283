package entrycache

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

// The cache holds its own copy of a put entry: equal to it, sharing none of
// its slices, so the caller may reuse what it put.
func TestPutEntryKeepsItsOwnCopy(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	c := New(td)
	e := &datastore.Entry{
		ID:            "entry-1",
		SPIFFEID:      spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web"),
		ParentID:      spiffeid.RequireFromString("spiffe://example.org/spire/agent/x509pop/node-1"),
		Selectors:     []selector.Selector{{Type: "k8s", Value: "ns:prod"}, {Type: "k8s", Value: "sa:web"}},
		DNSNames:      []string{"web.prod.example.org", "web"},
		FederatesWith: []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("other.org")},
		Hint:          "web",
		X509SVIDTTL:   3600,
		ExpiresAt:     1900000000,
		Downstream:    true,
	}
	want := *e
	want.Selectors = append([]selector.Selector(nil), e.Selectors...)
	want.DNSNames = append([]string(nil), e.DNSNames...)
	want.FederatesWith = append([]spiffeid.TrustDomain(nil), e.FederatesWith...)
	c.PutEntry(e)

	e.Selectors[0].Value = "ns:changed"
	e.DNSNames[1] = "changed"
	e.FederatesWith[0] = spiffeid.RequireTrustDomainFromString("changed.org")
	got, ok := c.Entry("entry-1")
	if !ok {
		t.Fatal("entry-1 not found")
	}
	opts := cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })
	tdOpt := cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b })
	if diff := cmp.Diff(&want, got, opts, tdOpt); diff != "" {
		t.Fatalf("held entry differs from the one put (-want +got):\n%s", diff)
	}
	if got.SPIFFEID.Path() != "/ns/prod/sa/web" || got.SPIFFEID.TrustDomain() != td {
		t.Fatalf("SPIFFE ID parts: %q %v", got.SPIFFEID.Path(), got.SPIFFEID.TrustDomain())
	}
	if ids := c.AuthorizedEntries(e.ParentID); len(ids) != 1 || ids[0].ID != "entry-1" {
		t.Fatalf("AuthorizedEntries = %v", ids)
	}
}

// Past maxTypes distinct selector types, types are kept with the entry's
// other strings, and every entry keeps its own.
func TestSelectorTypesBeyondInternBound(t *testing.T) {
	c := New(spiffeid.RequireTrustDomainFromString("example.org"))
	parent := spiffeid.RequireFromString("spiffe://example.org/agent")
	n := maxTypes + 50
	for i := range n {
		c.PutEntry(&datastore.Entry{ID: fmt.Sprint("e", i), ParentID: parent,
			SPIFFEID:  spiffeid.RequireFromString(fmt.Sprint("spiffe://example.org/w/", i)),
			Selectors: []selector.Selector{{Type: fmt.Sprint("type", i), Value: fmt.Sprint("v", i)}}})
	}
	if len(c.types) != maxTypes {
		t.Fatalf("interned %d types, want %d", len(c.types), maxTypes)
	}
	// An entry whose new types fill the table midway through its own
	// selectors: the cache starts over at one short of the bound.
	c2 := New(spiffeid.RequireTrustDomainFromString("example.org"))
	for i := range maxTypes - 1 {
		c2.PutEntry(&datastore.Entry{ID: fmt.Sprint("f", i), ParentID: parent,
			SPIFFEID:  spiffeid.RequireFromString(fmt.Sprint("spiffe://example.org/f/", i)),
			Selectors: []selector.Selector{{Type: fmt.Sprint("type", i), Value: "v"}}})
	}
	last := []selector.Selector{{Type: "new-a", Value: "1"}, {Type: "new-b", Value: "2"}, {Type: "new-c", Value: "3"}}
	c2.PutEntry(&datastore.Entry{ID: "last", ParentID: parent, SPIFFEID: spiffeid.RequireFromString("spiffe://example.org/last"), Selectors: last})
	got, ok := c2.Entry("last")
	if !ok || !slices.Equal(got.Selectors, last) || got.SPIFFEID.String() != "spiffe://example.org/last" || got.ID != "last" {
		t.Fatalf("entry across the bound = %+v, want selectors %v", got, last)
	}
	checkInvariants(t, c2)
	for i := range n {
		e, ok := c.Entry(fmt.Sprint("e", i))
		if !ok {
			t.Fatalf("e%d missing", i)
		}
		if s := e.Selectors[0]; s.Type != fmt.Sprint("type", i) || s.Value != fmt.Sprint("v", i) {
			t.Fatalf("e%d selector = %v", i, s)
		}
	}
	checkInvariants(t, c)
}
