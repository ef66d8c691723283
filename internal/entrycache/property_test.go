package entrycache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

// TestMatchesReference applies thousands of random operations to a Cache and
// to a brute-force reference and compares every query after each step. The
// small pools of IDs and selectors make collisions, moves, aliases, cycles
// and duplicates frequent.
func TestMatchesReference(t *testing.T) {
	const (
		steps      = 6000
		entryIDs   = 120
		checkEvery = 1
	)
	rng := rand.New(rand.NewPCG(1, 2))

	agents := []spiffeid.ID{id(agentA), id(agentB), id("/spire/agent/join_token/c"), id("/spire/agent/join_token/d")}
	serverID := id(server)
	var others []spiffeid.ID
	for i := 0; i < 12; i++ {
		others = append(others, id(fmt.Sprintf("/w/%d", i)))
	}
	// Parents are mostly agents, the server (aliases) and workload IDs;
	// SPIFFE IDs are mostly workload IDs, sometimes an agent's or the
	// server's own ID.
	pick := func(list []spiffeid.ID) spiffeid.ID { return list[rng.IntN(len(list))] }
	randParent := func() spiffeid.ID {
		switch r := rng.IntN(10); {
		case r < 3:
			return pick(agents)
		case r < 6:
			return serverID
		default:
			return pick(others)
		}
	}
	randSPIFFE := func() spiffeid.ID {
		switch r := rng.IntN(40); {
		case r == 0:
			return serverID
		case r < 3:
			return pick(agents)
		default:
			return pick(others)
		}
	}
	selPool := sels("k8s:ns:a", "k8s:ns:b", "k8s:sa:x", "tpm:hash:1", "tpm:hash:2", "aws:region:eu")
	randSels := func(max int) []selector.Selector {
		n := rng.IntN(max + 1)
		out := make([]selector.Selector, 0, n)
		for i := 0; i < n; i++ {
			out = append(out, selPool[rng.IntN(len(selPool))])
		}
		return out
	}
	randEntry := func() *datastore.Entry {
		return &datastore.Entry{
			ID:        fmt.Sprintf("e%03d", rng.IntN(entryIDs)),
			ParentID:  randParent(),
			SPIFFEID:  randSPIFFE(),
			Selectors: randSels(3),
			// Not expired vs expired must not matter to the index.
			ExpiresAt: int64(rng.IntN(2)),
		}
	}

	c := New(testTD)
	ref := newReference(testTD)
	apply := func(step int) string {
		switch r := rng.IntN(100); {
		case r < 55:
			e := randEntry()
			c.PutEntry(e)
			ref.entries[e.ID] = e
			return fmt.Sprintf("put %s parent=%v spiffe=%v sels=%v", e.ID, e.ParentID, e.SPIFFEID, e.Selectors)
		case r < 80:
			eid := fmt.Sprintf("e%03d", rng.IntN(entryIDs))
			c.DeleteEntry(eid)
			delete(ref.entries, eid)
			return "delete " + eid
		case r < 92:
			a := pick(agents)
			s := randSels(5)
			c.PutNodeSelectors(a, s)
			ref.nodes[a] = slices.Clone(s)
			return fmt.Sprintf("node %v sels=%v", a, s)
		case r < 98:
			a := pick(agents)
			c.DeleteNode(a)
			delete(ref.nodes, a)
			return fmt.Sprintf("delete node %v", a)
		default:
			var entries []*datastore.Entry
			for _, e := range ref.entries {
				entries = append(entries, e)
			}
			slices.SortFunc(entries, func(a, b *datastore.Entry) int { return strings.Compare(a.ID, b.ID) })
			var nodes []*datastore.Node
			for a, s := range ref.nodes {
				nodes = append(nodes, &datastore.Node{ID: a, Selectors: s})
			}
			c.Reset(entries, nodes)
			return "reset"
		}
	}

	var history []string
	for step := 0; step < steps; step++ {
		history = append(history, apply(step))
		if step%checkEvery != 0 {
			continue
		}
		fail := func(format string, args ...any) {
			t.Helper()
			tail := history[max(0, len(history)-8):]
			t.Fatalf("step %d: %s\nlast operations:\n  %s", step, fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
		}
		checkInvariants(t, c)
		if got, want := c.Count(), len(ref.entries); got != want {
			fail("Count() = %d, want %d", got, want)
		}
		for _, a := range append(slices.Clone(agents), serverID) {
			if diff := cmp.Diff(ref.authorized(a), ids(c.AuthorizedEntries(a))); diff != "" {
				fail("AuthorizedEntries(%v) mismatch (-want +got):\n%s", a, diff)
			}
		}
		sid := randSPIFFE()
		if diff := cmp.Diff(ref.bySPIFFEID(sid), ids(c.EntriesBySPIFFEID(sid))); diff != "" {
			fail("EntriesBySPIFFEID(%v) mismatch (-want +got):\n%s", sid, diff)
		}
		probe := randEntry()
		if got, ok := c.FindDuplicate(probe); ok != ref.duplicate(probe) {
			fail("FindDuplicate(%+v) = %v, %v; want found=%v", probe, got, ok, !ok)
		} else if ok && (got.ParentID != probe.ParentID || got.SPIFFEID != probe.SPIFFEID || !selector.Equal(got.Selectors, probe.Selectors) || got.ID == probe.ID) {
			fail("FindDuplicate(%+v) returned non-duplicate %+v", probe, got)
		}
		eid := fmt.Sprintf("e%03d", rng.IntN(entryIDs))
		got, ok := c.Entry(eid)
		want, wantOK := ref.entries[eid]
		if ok != wantOK || (ok && (got.ID != want.ID || got.ParentID != want.ParentID || got.SPIFFEID != want.SPIFFEID || got.ExpiresAt != want.ExpiresAt || !slices.Equal(got.Selectors, want.Selectors))) {
			fail("Entry(%s) = %+v, %v; want %+v, %v", eid, got, ok, want, wantOK)
		}
		if step%25 == 0 {
			match := func(e *datastore.Entry) bool { return e.ParentID == serverID }
			if rng.IntN(2) == 0 {
				match = nil
			}
			pageSize := rng.IntN(8)
			var listed []string
			token := ""
			for pages := 0; ; pages++ {
				if pages > entryIDs+1 {
					fail("List did not finish")
				}
				page, next := c.List(match, token, pageSize)
				if pageSize > 0 && len(page) > pageSize {
					fail("List(pageSize %d) returned %d entries", pageSize, len(page))
				}
				for _, e := range page {
					listed = append(listed, e.ID)
				}
				if next == "" {
					break
				}
				token = next
			}
			if diff := cmp.Diff(ref.sortedIDs(match), listed, cmp.Comparer(func(a, b []string) bool {
				return slices.Equal(a, b) // nil and empty are equal here
			})); diff != "" {
				fail("List(pageSize %d) mismatch (-want +got):\n%s", pageSize, diff)
			}
		}
	}

	// Deleting everything leaves no trace in any index.
	for eid := range ref.entries {
		c.DeleteEntry(eid)
	}
	checkInvariants(t, c)
	c.mu.RLock()
	defer c.mu.RUnlock()
	if n := len(c.byID) + len(c.byParent) + len(c.bySPIFFEID) + len(c.sameSPIFFEID) + len(c.aliases) + len(c.order.blocks); n != 0 {
		t.Errorf("after deleting every entry: byID %d, byParent %d, bySPIFFEID %d, sameSPIFFEID %d, aliases %d, blocks %d; want all 0",
			len(c.byID), len(c.byParent), len(c.bySPIFFEID), len(c.sameSPIFFEID), len(c.aliases), len(c.order.blocks))
	}
}

// TestOrderedLarge drives the block list through splits and merges with many
// more entries than TestMatchesReference uses.
func TestOrderedLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var o ordered
	present := map[string]*datastore.Entry{}
	for step := 0; step < 40000; step++ {
		eid := fmt.Sprintf("%06d", rng.IntN(5000))
		if rng.IntN(3) == 0 {
			o.remove(eid)
			delete(present, eid)
		} else {
			e := &datastore.Entry{ID: eid}
			o.put(e)
			present[eid] = e
		}
	}
	var want []string
	for eid := range present {
		want = append(want, eid)
	}
	slices.Sort(want)
	var got []string
	o.ascendAfter("", func(e *datastore.Entry) bool {
		if present[e.ID] != e {
			t.Fatalf("ordered holds a stale version of %s", e.ID)
		}
		got = append(got, e.ID)
		return true
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("ordered content mismatch (-want +got):\n%s", diff)
	}
	if len(o.blocks) < 2 {
		t.Errorf("ordered has %d blocks for %d entries; splits did not happen", len(o.blocks), len(got))
	}
	for i, b := range o.blocks {
		if len(b) == 0 || len(b) > blockMax {
			t.Errorf("block %d has %d entries", i, len(b))
		}
	}
}

// TestSameSPIFFEIDGroups walks one SPIFFE ID from one entry to three and
// back, deleting from the middle, the end and the front, checking the
// indexes and EntriesBySPIFFEID at every step.
func TestSameSPIFFEIDGroups(t *testing.T) {
	c := New(spiffeid.RequireTrustDomainFromString("example.org"))
	sid := spiffeid.RequireFromString("spiffe://example.org/workload")
	put := func(id, parent string) {
		c.PutEntry(&datastore.Entry{ID: id, SPIFFEID: sid, ParentID: spiffeid.RequireFromString("spiffe://example.org/" + parent),
			Selectors: []selector.Selector{{Type: "unix", Value: "uid:" + id}}})
	}
	want := func(ids ...string) {
		t.Helper()
		checkInvariants(t, c)
		got := []string{}
		for _, e := range c.EntriesBySPIFFEID(sid) {
			got = append(got, e.ID)
		}
		slices.Sort(got)
		slices.Sort(ids)
		if !slices.Equal(got, ids) {
			t.Fatalf("EntriesBySPIFFEID = %v, want %v", got, ids)
		}
	}
	put("a", "p1")
	want("a")
	put("b", "p2")
	want("a", "b")
	put("c", "p3")
	want("a", "b", "c")
	c.DeleteEntry("b")
	want("a", "c")
	put("d", "p4")
	want("a", "c", "d")
	c.DeleteEntry("d")
	want("a", "c")
	c.DeleteEntry("a")
	want("c")
	put("a", "p1")
	want("a", "c")
	c.DeleteEntry("c")
	c.DeleteEntry("a")
	want()
}
