package entrycache

import (
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
)

// op is one mutation applied in order before a check.
type op func(c *Cache)

func put(entryID, parent, spiffe string, ss ...string) op {
	return func(c *Cache) {
		c.PutEntry(&datastore.Entry{ID: entryID, ParentID: id(parent), SPIFFEID: id(spiffe), Selectors: sels(ss...)})
	}
}

func del(entryID string) op { return func(c *Cache) { c.DeleteEntry(entryID) } }

func node(agent string, ss ...string) op {
	return func(c *Cache) { c.PutNodeSelectors(id(agent), sels(ss...)) }
}

func delNode(agent string) op { return func(c *Cache) { c.DeleteNode(id(agent)) } }

const (
	agentA = "/spire/agent/join_token/a"
	agentB = "/spire/agent/join_token/b"
	server = "/spire/server"
)

type authCase struct {
	name  string
	ops   []op
	agent string
	want  []string
}

func TestAuthorizedEntries(t *testing.T) {
	tests := []authCase{
		{
			name:  "empty cache",
			agent: agentA,
			want:  []string{},
		},
		{
			name: "direct children only",
			ops: []op{
				put("e1", agentA, "/w1", "unix:uid:1"),
				put("e2", agentA, "/w2", "unix:uid:2"),
				put("e3", agentB, "/w3", "unix:uid:3"),
			},
			agent: agentA,
			want:  []string{"e1", "e2"},
		},
		{
			name: "direct children without known node",
			ops: []op{
				put("e1", agentA, "/w1", "unix:uid:1"),
				put("alias", server, "/cluster", "tpm:x:1"),
			},
			agent: agentA,
			want:  []string{"e1"},
		},
		{
			name: "alias applies via subset",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire", "k8s_psat:node:n1"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire"),
				put("w1", "/cluster/prod", "/ns/a", "k8s:ns:a"),
				put("w2", "/cluster/prod", "/ns/b", "k8s:ns:b"),
				put("other", "/cluster/test", "/ns/c", "k8s:ns:c"),
			},
			agent: agentA,
			want:  []string{"alias", "w1", "w2"},
		},
		{
			name: "alias with equal selector set applies",
			ops: []op{
				node(agentA, "tpm:pub_hash:x"),
				put("alias", server, "/tpm/x", "tpm:pub_hash:x"),
				put("w1", "/tpm/x", "/w1", "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"alias", "w1"},
		},
		{
			name: "alias not applied when selectors are not a subset",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod", "k8s_psat:node:n1"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire"),
				put("w1", "/cluster/prod", "/ns/a", "k8s:ns:a"),
			},
			agent: agentA,
			want:  []string{},
		},
		{
			name: "alias without selectors applies to nobody",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod"),
				put("alias", server, "/everyone"),
				put("w1", "/everyone", "/w1", "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{},
		},
		{
			name: "several aliases sharing a selector",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod", "k8s_psat:node:n1"),
				node(agentB, "k8s_psat:cluster:prod", "k8s_psat:node:n2"),
				put("cluster", server, "/cluster/prod", "k8s_psat:cluster:prod"),
				put("n1", server, "/node/n1", "k8s_psat:cluster:prod", "k8s_psat:node:n1"),
				put("n2", server, "/node/n2", "k8s_psat:cluster:prod", "k8s_psat:node:n2"),
				put("w1", "/node/n1", "/w1", "unix:uid:1"),
				put("w2", "/node/n2", "/w2", "unix:uid:1"),
				put("wc", "/cluster/prod", "/wc", "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"cluster", "n1", "w1", "wc"},
		},
		{
			name: "two aliases with the same SPIFFE ID expand it once",
			ops: []op{
				node(agentA, "a:x:1", "b:y:2"),
				put("alias1", server, "/shared", "a:x:1"),
				put("alias2", server, "/shared", "b:y:2"),
				put("w1", "/shared", "/w1", "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"alias1", "alias2", "w1"},
		},
		{
			name: "descendants two levels deep",
			ops: []op{
				put("l1", agentA, "/downstream", "unix:uid:1"),
				put("l2", "/downstream", "/downstream/child", "unix:uid:2"),
				put("l3", "/downstream/child", "/downstream/grandchild", "unix:uid:3"),
				put("unrelated", "/elsewhere", "/x", "unix:uid:4"),
			},
			agent: agentA,
			want:  []string{"l1", "l2", "l3"},
		},
		{
			name: "cycle A to B to A terminates",
			ops: []op{
				put("root", agentA, "/a", "unix:uid:0"),
				put("ab", "/a", "/b", "unix:uid:1"),
				put("ba", "/b", "/a", "unix:uid:2"),
			},
			agent: agentA,
			want:  []string{"ab", "ba", "root"},
		},
		{
			name: "cycle back to the agent itself terminates",
			ops: []op{
				put("x", agentA, "/x", "unix:uid:0"),
				put("back", "/x", agentA, "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"back", "x"},
		},
		{
			name: "entry moved to another parent",
			ops: []op{
				put("e1", agentA, "/w1", "unix:uid:1"),
				put("e2", agentA, "/w2", "unix:uid:2"),
				put("e1", agentB, "/w1", "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"e2"},
		},
		{
			name: "entry moved to another parent is found there",
			ops: []op{
				put("e1", agentA, "/w1", "unix:uid:1"),
				put("e1", agentB, "/w1", "unix:uid:1"),
			},
			agent: agentB,
			want:  []string{"e1"},
		},
		{
			name: "descendants follow a changed SPIFFE ID",
			ops: []op{
				put("mid", agentA, "/old", "unix:uid:1"),
				put("child-old", "/old", "/c1", "unix:uid:2"),
				put("child-new", "/new", "/c2", "unix:uid:3"),
				put("mid", agentA, "/new", "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"child-new", "mid"},
		},
		{
			name: "alias demoted to a workload entry stops applying",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod"),
				put("w1", "/cluster/prod", "/w1", "unix:uid:1"),
				put("alias", agentB, "/cluster/prod", "k8s_psat:cluster:prod"),
			},
			agent: agentA,
			want:  []string{},
		},
		{
			name: "alias selectors changed to no longer match",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod"),
				put("w1", "/cluster/prod", "/w1", "unix:uid:1"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:test"),
			},
			agent: agentA,
			want:  []string{},
		},
		{
			name: "node deleted loses its aliases but keeps direct children",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod"),
				put("w1", "/cluster/prod", "/w1", "unix:uid:1"),
				put("own", agentA, "/own", "unix:uid:2"),
				delNode(agentA),
			},
			agent: agentA,
			want:  []string{"own"},
		},
		{
			name: "node selectors replaced",
			ops: []op{
				node(agentA, "k8s_psat:cluster:prod"),
				put("prod", server, "/cluster/prod", "k8s_psat:cluster:prod"),
				put("test", server, "/cluster/test", "k8s_psat:cluster:test"),
				node(agentA, "k8s_psat:cluster:test"),
			},
			agent: agentA,
			want:  []string{"test"},
		},
		{
			name: "deleted entry cuts its descendants",
			ops: []op{
				put("l1", agentA, "/l1", "unix:uid:1"),
				put("l2", "/l1", "/l2", "unix:uid:2"),
				del("l1"),
			},
			agent: agentA,
			want:  []string{},
		},
		{
			name: "server ID as an entry SPIFFE ID does not expose aliases",
			ops: []op{
				node(agentB, "k8s_psat:cluster:prod"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod"),
				put("evil", agentA, server, "unix:uid:1"),
			},
			agent: agentA,
			want:  []string{"evil"},
		},
		{
			name: "the server ID is not an agent",
			ops: []op{
				node(server, "k8s_psat:cluster:prod"),
				put("alias", server, "/cluster/prod", "k8s_psat:cluster:prod"),
			},
			agent: server,
			want:  []string{},
		},
	}
	// A chain and a wide tree, both with more parent IDs than the
	// allocation-free small set holds.
	chainOps, chainWant := []op{put("c000", agentA, "/chain/0", "unix:uid:0")}, []string{"c000"}
	for i := 1; i < 100; i++ {
		eid := fmt.Sprintf("c%03d", i)
		chainOps = append(chainOps, put(eid, fmt.Sprintf("/chain/%d", i-1), fmt.Sprintf("/chain/%d", i), "unix:uid:0"))
		chainWant = append(chainWant, eid)
	}
	chainOps = append(chainOps, put("loop", "/chain/99", "/chain/0", "unix:uid:1"), put("off", "/chain/x", "/chain/1", "unix:uid:0"))
	chainWant = append(chainWant, "loop")
	var wideOps []op
	var wideWant []string
	for i := 0; i < 60; i++ {
		mid, leaf := fmt.Sprintf("m%02d", i), fmt.Sprintf("l%02d", i)
		wideOps = append(wideOps,
			put(mid, agentA, "/mid/"+mid, "unix:uid:0"),
			put(leaf, "/mid/"+mid, "/leaf/shared", "unix:uid:0"),
		)
		wideWant = append(wideWant, leaf, mid)
	}
	wideOps = append(wideOps, put("under-shared", "/leaf/shared", "/x", "unix:uid:0"))
	wideWant = append(wideWant, "under-shared")
	slices.Sort(chainWant)
	slices.Sort(wideWant)
	tests = append(tests,
		authCase{"chain of 100 descendants with a loop", chainOps, agentA, chainWant},
		authCase{"wide tree sharing one leaf SPIFFE ID", wideOps, agentA, wideWant},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(testTD)
			for _, o := range tt.ops {
				o(c)
			}
			checkInvariants(t, c)
			got := ids(c.AuthorizedEntries(id(tt.agent)))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("AuthorizedEntries(%s) mismatch (-want +got):\n%s", tt.agent, diff)
			}
		})
	}
}

func TestEntryIndexes(t *testing.T) {
	c := New(testTD)
	e1 := &datastore.Entry{ID: "e1", ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1"), Hint: "h"}
	c.PutEntry(e1)
	c.PutEntry(&datastore.Entry{ID: "e2", ParentID: id(agentB), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1")})
	c.PutEntry(&datastore.Entry{ID: "e3", ParentID: id(agentA), SPIFFEID: id("/v"), Selectors: sels("unix:uid:1")})

	if got, ok := c.Entry("e1"); !ok || got.Hint != "h" || got.SPIFFEID != e1.SPIFFEID {
		t.Errorf("Entry(e1) = %+v, %v; want the stored entry", got, ok)
	}
	if _, ok := c.Entry("nope"); ok {
		t.Errorf("Entry(nope) found an entry")
	}
	if got := ids(c.EntriesBySPIFFEID(id("/w"))); !cmp.Equal(got, []string{"e1", "e2"}) {
		t.Errorf("EntriesBySPIFFEID(/w) = %v, want [e1 e2]", got)
	}
	if got := ids(c.EntriesByParentID(id(agentA))); !cmp.Equal(got, []string{"e1", "e3"}) {
		t.Errorf("EntriesByParentID(agentA) = %v, want [e1 e3]", got)
	}
	if got := c.Count(); got != 3 {
		t.Errorf("Count() = %d, want 3", got)
	}

	c.PutEntry(&datastore.Entry{ID: "e1", ParentID: id(agentA), SPIFFEID: id("/v"), Selectors: sels("unix:uid:9")})
	if got := ids(c.EntriesBySPIFFEID(id("/w"))); !cmp.Equal(got, []string{"e2"}) {
		t.Errorf("after moving e1, EntriesBySPIFFEID(/w) = %v, want [e2]", got)
	}
	if got := ids(c.EntriesBySPIFFEID(id("/v"))); !cmp.Equal(got, []string{"e1", "e3"}) {
		t.Errorf("after moving e1, EntriesBySPIFFEID(/v) = %v, want [e1 e3]", got)
	}
	c.DeleteEntry("e1")
	c.DeleteEntry("e1") // deleting twice is harmless
	if got := c.Count(); got != 2 {
		t.Errorf("Count() after delete = %d, want 2", got)
	}
	checkInvariants(t, c)

	sorted, ok := c.NodeSelectors(id(agentA))
	if ok || sorted != nil {
		t.Errorf("NodeSelectors(unknown) = %v, %v; want nil, false", sorted, ok)
	}
	in := sels("b:x:1", "a:y:2", "b:x:1")
	c.PutNodeSelectors(id(agentA), in)
	in[0] = sel("z:z:z") // the cache keeps its own copy
	sorted, ok = c.NodeSelectors(id(agentA))
	if want := sels("a:y:2", "b:x:1"); !ok || !cmp.Equal(sorted, want) {
		t.Errorf("NodeSelectors(agentA) = %v, %v; want %v, true", sorted, ok, want)
	}
}

func TestFindDuplicate(t *testing.T) {
	c := New(testTD)
	c.PutEntry(&datastore.Entry{ID: "e1", ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1", "unix:gid:2")})
	c.PutEntry(&datastore.Entry{ID: "e2", ParentID: id(agentA), SPIFFEID: id("/other"), Selectors: sels("unix:uid:1")})
	tests := []struct {
		name   string
		e      *datastore.Entry
		wantID string
	}{
		{"same set in another order", &datastore.Entry{ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:gid:2", "unix:uid:1")}, "e1"},
		{"same set with a repeated selector", &datastore.Entry{ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:gid:2", "unix:uid:1", "unix:uid:1")}, "e1"},
		{"subset is not a duplicate", &datastore.Entry{ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1")}, ""},
		{"other parent", &datastore.Entry{ParentID: id(agentB), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1", "unix:gid:2")}, ""},
		{"other SPIFFE ID", &datastore.Entry{ParentID: id(agentA), SPIFFEID: id("/x"), Selectors: sels("unix:uid:1", "unix:gid:2")}, ""},
		{"an entry is not its own duplicate", &datastore.Entry{ID: "e1", ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1", "unix:gid:2")}, ""},
		{"update colliding with another entry", &datastore.Entry{ID: "e2", ParentID: id(agentA), SPIFFEID: id("/w"), Selectors: sels("unix:uid:1", "unix:gid:2")}, "e1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := c.FindDuplicate(tt.e)
			gotID := ""
			if ok {
				gotID = got.ID
			}
			if gotID != tt.wantID {
				t.Errorf("FindDuplicate(%+v) = %q, want %q", tt.e, gotID, tt.wantID)
			}
		})
	}
}

func TestList(t *testing.T) {
	c := New(testTD)
	var all []string
	for i := 0; i < 2000; i++ {
		eid := fmt.Sprintf("id-%05d", i)
		all = append(all, eid)
		parent := agentA
		if i%3 == 0 {
			parent = agentB
		}
		c.PutEntry(&datastore.Entry{ID: eid, ParentID: id(parent), SPIFFEID: id(fmt.Sprintf("/w%d", i)), Selectors: sels("unix:uid:1")})
	}
	onB := func(e *datastore.Entry) bool { return e.ParentID == id(agentB) }
	var wantB []string
	for i, eid := range all {
		if i%3 == 0 {
			wantB = append(wantB, eid)
		}
	}
	tests := []struct {
		name     string
		match    func(*datastore.Entry) bool
		pageSize int
		want     []string
	}{
		{"all at once", nil, 0, all},
		{"pages of 7", nil, 7, all},
		{"pages of 600", nil, 600, all},
		{"exact multiple", nil, 1000, all},
		{"filtered pages of 50", onB, 50, wantB},
		{"filtered exact multiple", onB, len(wantB), wantB},
		{"nothing matches", func(*datastore.Entry) bool { return false }, 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			token := ""
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("List did not finish after %d pages", pages)
				}
				page, next := c.List(tt.match, token, tt.pageSize)
				if tt.pageSize > 0 && len(page) > tt.pageSize {
					t.Fatalf("List returned %d entries, page size %d", len(page), tt.pageSize)
				}
				for _, e := range page {
					got = append(got, e.ID)
				}
				if next == "" {
					break
				}
				if len(page) == 0 || next != page[len(page)-1].ID {
					t.Fatalf("List next = %q after a page ending at %v", next, page)
				}
				token = next
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("List pages mismatch (-want +got):\n%s", diff)
			}
		})
	}

	// A token naming a deleted entry still continues after it.
	c.DeleteEntry("id-00010")
	page, _ := c.List(nil, "id-00010", 2)
	if got := ids(page); !cmp.Equal(got, []string{"id-00011", "id-00012"}) {
		t.Errorf("List after deleted token = %v, want [id-00011 id-00012]", got)
	}
	// Deleting nearly everything merges blocks and leaves order intact.
	for i, eid := range all {
		if i%97 != 0 {
			c.DeleteEntry(eid)
		}
	}
	checkInvariants(t, c)
	if len(c.order.blocks) != 1 {
		t.Errorf("after deleting all but %d entries, order has %d blocks, want 1", c.Count(), len(c.order.blocks))
	}
}

func TestReset(t *testing.T) {
	c := New(testTD)
	c.PutEntry(&datastore.Entry{ID: "stale", ParentID: id(agentA), SPIFFEID: id("/stale")})
	c.PutNodeSelectors(id(agentB), sels("a:b:c"))

	entries := []*datastore.Entry{
		{ID: "alias", ParentID: id(server), SPIFFEID: id("/cluster"), Selectors: sels("k8s_psat:cluster:prod")},
		{ID: "w1", ParentID: id("/cluster"), SPIFFEID: id("/w1"), Selectors: sels("unix:uid:1")},
		{ID: "w2", ParentID: id(agentA), SPIFFEID: id("/w2"), Selectors: sels("unix:uid:2")},
		nil,
		{ID: "w2", ParentID: id(agentA), SPIFFEID: id("/w2-final"), Selectors: sels("unix:uid:2")},
	}
	nodes := []*datastore.Node{
		{ID: id(agentA), Selectors: sels("k8s_psat:cluster:prod")},
	}
	c.Reset(entries, nodes)
	checkInvariants(t, c)
	if got := c.Count(); got != 3 {
		t.Errorf("Count() = %d, want 3", got)
	}
	if _, ok := c.Entry("stale"); ok {
		t.Errorf("Reset kept entry stale")
	}
	if _, ok := c.NodeSelectors(id(agentB)); ok {
		t.Errorf("Reset kept node B")
	}
	if got := ids(c.AuthorizedEntries(id(agentA))); !cmp.Equal(got, []string{"alias", "w1", "w2"}) {
		t.Errorf("AuthorizedEntries(agentA) = %v, want [alias w1 w2]", got)
	}
	if e, _ := c.Entry("w2"); e.SPIFFEID != id("/w2-final") {
		t.Errorf("Entry(w2).SPIFFEID = %v, want the last duplicate's /w2-final", e.SPIFFEID)
	}
}

func TestZeroTrustDomainHasNoAliases(t *testing.T) {
	c := New(spiffeid.TrustDomain{})
	c.PutNodeSelectors(id(agentA), sels("a:b:c"))
	c.PutEntry(&datastore.Entry{ID: "zero-parent", SPIFFEID: id("/x"), Selectors: sels("a:b:c")})
	if got := c.AuthorizedEntries(id(agentA)); len(got) != 0 {
		t.Errorf("AuthorizedEntries = %v, want none", ids(got))
	}
	checkInvariants(t, c)
}

func TestParentIDShared(t *testing.T) {
	// Entries of one parent share the parent ID's bytes even when each was
	// loaded with its own copy, and the values stay equal.
	c := New(testTD)
	p1 := freshID(agentA)
	p2 := freshID(agentA)
	c.PutEntry(&datastore.Entry{ID: "e1", ParentID: p1, SPIFFEID: id("/a")})
	c.PutEntry(&datastore.Entry{ID: "e2", ParentID: p2, SPIFFEID: id("/b")})
	e2, _ := c.Entry("e2")
	if e2.ParentID != p2 {
		t.Fatalf("stored ParentID = %v, want %v", e2.ParentID, p2)
	}
	c.mu.RLock()
	g := c.byParent[p1]
	c.mu.RUnlock()
	if g.entries[1] != e2 || !sameBytes(g.id.String(), e2.ParentID.String()) {
		t.Errorf("e2's ParentID does not share the group key's bytes")
	}
}

// sameBytes reports whether a and b are the same bytes in memory.
func sameBytes(a, b string) bool {
	return len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}
