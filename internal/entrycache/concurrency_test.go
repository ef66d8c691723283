package entrycache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/internal/datastore"
)

// TestConcurrentReadersAndWriters runs writers and readers at once (run it
// with -race). Writers churn entries and nodes in their own ID spaces; readers
// check that a stable agent's view never changes and that List stays sorted.
// At the end the cache must equal the union of the writers' final states.
func TestConcurrentReadersAndWriters(t *testing.T) {
	const (
		writers     = 3
		readers     = 3
		opsPerWrite = 3000
	)
	stable := []*datastore.Entry{
		{ID: "stable-alias", ParentID: id(server), SPIFFEID: id("/stable/cluster"), Selectors: sels("x:cluster:stable")},
		{ID: "stable-w1", ParentID: id("/stable/cluster"), SPIFFEID: id("/stable/w1"), Selectors: sels("unix:uid:1")},
		{ID: "stable-own1", ParentID: id(agentA), SPIFFEID: id("/stable/own1"), Selectors: sels("unix:uid:1")},
		{ID: "stable-own2", ParentID: id(agentA), SPIFFEID: id("/stable/own2"), Selectors: sels("unix:uid:2")},
		{ID: "stable-deep", ParentID: id("/stable/own2"), SPIFFEID: id("/stable/deep"), Selectors: sels("unix:uid:3")},
	}
	wantStable := ids(stable)

	c := New(testTD)
	c.Reset(stable, []*datastore.Node{{ID: id(agentA), Selectors: sels("x:cluster:stable", "x:node:a")}})

	var (
		wg       sync.WaitGroup
		done     atomic.Bool
		finals   = make([]map[string]*datastore.Entry, writers)
		readErrs = make(chan string, readers)
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			mine := map[string]*datastore.Entry{}
			agent := func() string { return fmt.Sprintf("/spire/agent/w%d/%d", w, rng.IntN(4)) }
			for i := 0; i < opsPerWrite; i++ {
				eid := fmt.Sprintf("w%d-e%02d", w, rng.IntN(60))
				switch r := rng.IntN(10); {
				case r < 5:
					parent := id(agent())
					if rng.IntN(3) == 0 {
						parent = id(server)
					}
					e := &datastore.Entry{
						ID:        eid,
						ParentID:  parent,
						SPIFFEID:  id(fmt.Sprintf("/w%d/s%d", w, rng.IntN(10))),
						Selectors: sels(fmt.Sprintf("x:cluster:w%d-%d", w, rng.IntN(3))),
					}
					c.PutEntry(e)
					mine[eid] = e
				case r < 8:
					c.DeleteEntry(eid)
					delete(mine, eid)
				case r < 9:
					c.PutNodeSelectors(id(agent()), sels(fmt.Sprintf("x:cluster:w%d-%d", w, rng.IntN(3))))
				default:
					c.DeleteNode(id(agent()))
				}
			}
			finals[w] = mine
		}()
	}

	var rwg sync.WaitGroup
	for r := 0; r < readers; r++ {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			report := func(format string, args ...any) {
				select {
				case readErrs <- fmt.Sprintf(format, args...):
				default:
				}
			}
			for iter := 0; !done.Load(); iter++ {
				if got := ids(c.AuthorizedEntries(id(agentA))); !slices.Equal(got, wantStable) {
					report("reader %d: AuthorizedEntries(agentA) = %v, want %v", r, got, wantStable)
					return
				}
				if got := c.EntriesBySPIFFEID(id("/stable/deep")); len(got) != 1 || got[0].ID != "stable-deep" {
					report("reader %d: EntriesBySPIFFEID(/stable/deep) = %v", r, ids(got))
					return
				}
				if _, ok := c.FindDuplicate(&datastore.Entry{ParentID: id(agentA), SPIFFEID: id("/stable/own1"), Selectors: sels("unix:uid:1")}); !ok {
					report("reader %d: FindDuplicate missed stable-own1", r)
					return
				}
				if iter%10 == 0 {
					page, _ := c.List(nil, "", 0)
					if !slices.IsSortedFunc(page, func(a, b *datastore.Entry) int { return strings.Compare(a.ID, b.ID) }) || len(page) < len(stable) {
						report("reader %d: List returned %d entries out of order", r, len(page))
						return
					}
				}
			}
		}()
	}

	wg.Wait()
	done.Store(true)
	rwg.Wait()
	close(readErrs)
	for msg := range readErrs {
		t.Error(msg)
	}

	checkInvariants(t, c)
	want := slices.Clone(wantStable)
	for _, m := range finals {
		for eid := range m {
			want = append(want, eid)
		}
	}
	slices.Sort(want)
	got, _ := c.List(nil, "", 0)
	if diff := cmp.Diff(want, ids(got)); diff != "" {
		t.Errorf("final entries mismatch (-want +got):\n%s", diff)
	}
	for _, m := range finals {
		for eid, e := range m {
			if g, ok := c.Entry(eid); !ok || g.ParentID != e.ParentID || g.SPIFFEID != e.SPIFFEID {
				t.Errorf("Entry(%s) = %+v, want the last write %+v", eid, g, e)
			}
		}
	}
}
