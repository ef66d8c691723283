package entrycache

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func id(path string) spiffeid.ID { return spiffeid.RequireFromPath(testTD, path) }

func sel(s string) selector.Selector {
	parsed, err := selector.Parse(s)
	if err != nil {
		panic(err)
	}
	return parsed
}

func sels(ss ...string) []selector.Selector {
	out := make([]selector.Selector, 0, len(ss))
	for _, s := range ss {
		out = append(out, sel(s))
	}
	return out
}

// ids returns the sorted IDs of entries.
func ids(entries []*datastore.Entry) []string {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

// checkInvariants verifies that every index agrees with byID and that nothing
// is left over from removed entries.
func checkInvariants(t *testing.T, c *Cache) {
	t.Helper()
	c.mu.RLock()
	defer c.mu.RUnlock()
	nParent, nSPIFFE, nAlias := 0, 0, 0
	for pid, g := range c.byParent {
		if len(g.entries) == 0 {
			t.Fatalf("empty parent group %v left behind", pid)
		}
		if g.id != pid {
			t.Fatalf("parent group key %v holds id %v", pid, g.id)
		}
		for i, e := range g.entries {
			s, ok := c.byID[e.ID]
			if !ok || s.e != e || int(s.parentPos) != i || e.ParentID != pid {
				t.Fatalf("byParent[%v][%d] = %s is stale (slot %+v, ok %v)", pid, i, e.ID, s, ok)
			}
			nParent++
		}
	}
	for sid, e := range c.bySPIFFEID {
		s, ok := c.byID[e.ID]
		if !ok || s.e != e || e.SPIFFEID.String() != sid {
			t.Fatalf("bySPIFFEID[%v] = %s is stale", sid, e.ID)
		}
		if _, both := c.sameSPIFFEID[sid]; both {
			t.Fatalf("SPIFFE ID %v in both bySPIFFEID and sameSPIFFEID", sid)
		}
		nSPIFFE++
	}
	for sid, list := range c.sameSPIFFEID {
		if len(list) < 2 {
			t.Fatalf("sameSPIFFEID[%v] holds %d entries, want 2 or more", sid, len(list))
		}
		for i, e := range list {
			s, ok := c.byID[e.ID]
			if !ok || s.e != e || int(s.spiffeIPos) != i || e.SPIFFEID.String() != sid {
				t.Fatalf("sameSPIFFEID[%v][%d] = %s is stale", sid, i, e.ID)
			}
			nSPIFFE++
		}
	}
	for key, bucket := range c.aliases {
		if len(bucket) == 0 {
			t.Fatalf("empty alias bucket %v left behind", key)
		}
		for _, e := range bucket {
			s, ok := c.byID[e.ID]
			if !ok || s.e != e || !c.isAlias(e) || !slices.Contains(e.Selectors, key) {
				t.Fatalf("alias bucket %v holds stale entry %s", key, e.ID)
			}
			nAlias++
		}
	}
	wantAlias := 0
	for _, s := range c.byID {
		if c.isAlias(s.e) && len(s.e.Selectors) > 0 {
			wantAlias++
		}
	}
	if nParent != len(c.byID) || nSPIFFE != len(c.byID) || nAlias != wantAlias {
		t.Fatalf("index sizes: byID %d, byParent %d, bySPIFFEID %d, aliases %d (want %d)",
			len(c.byID), nParent, nSPIFFE, nAlias, wantAlias)
	}
	if n := c.order.len(); n != len(c.byID) {
		t.Fatalf("order holds %d entries, byID %d", n, len(c.byID))
	}
	var prev string
	for bi, b := range c.order.blocks {
		if len(b) == 0 || len(b) > blockMax {
			t.Fatalf("order block %d has %d entries", bi, len(b))
		}
		for _, e := range b {
			if (bi > 0 || prev != "") && e.ID <= prev {
				t.Fatalf("order not sorted: %q after %q", e.ID, prev)
			}
			prev = e.ID
			if s, ok := c.byID[e.ID]; !ok || s.e != e {
				t.Fatalf("order holds stale entry %s", e.ID)
			}
		}
	}
}

// reference is a brute-force model of the cache: plain maps and fixed-point
// loops over every entry.
type reference struct {
	serverID spiffeid.ID
	entries  map[string]*datastore.Entry
	nodes    map[spiffeid.ID][]selector.Selector
}

func newReference(td spiffeid.TrustDomain) *reference {
	return &reference{
		serverID: spiffeid.RequireFromPath(td, "/spire/server"),
		entries:  map[string]*datastore.Entry{},
		nodes:    map[spiffeid.ID][]selector.Selector{},
	}
}

func (r *reference) authorized(agent spiffeid.ID) []string {
	if agent == r.serverID {
		return []string{}
	}
	as := map[spiffeid.ID]bool{agent: true}
	got := map[string]bool{}
	nodeSels, known := r.nodes[agent]
	for _, e := range r.entries {
		if known && e.ParentID == r.serverID && len(e.Selectors) > 0 && selector.IsSubset(e.Selectors, nodeSels) {
			got[e.ID] = true
			if e.SPIFFEID != r.serverID {
				as[e.SPIFFEID] = true
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, e := range r.entries {
			if got[e.ID] || !as[e.ParentID] {
				continue
			}
			got[e.ID] = true
			changed = true
			if e.SPIFFEID != r.serverID {
				as[e.SPIFFEID] = true
			}
		}
	}
	out := []string{}
	for k := range got {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (r *reference) bySPIFFEID(sid spiffeid.ID) []string {
	out := []string{}
	for _, e := range r.entries {
		if e.SPIFFEID == sid {
			out = append(out, e.ID)
		}
	}
	slices.Sort(out)
	return out
}

func (r *reference) duplicate(e *datastore.Entry) bool {
	for _, o := range r.entries {
		if o.ID != e.ID && o.ParentID == e.ParentID && o.SPIFFEID == e.SPIFFEID && selector.Equal(o.Selectors, e.Selectors) {
			return true
		}
	}
	return false
}

func (r *reference) sortedIDs(match func(*datastore.Entry) bool) []string {
	out := []string{}
	for _, e := range r.entries {
		if match == nil || match(e) {
			out = append(out, e.ID)
		}
	}
	slices.Sort(out)
	return out
}

// population describes a synthetic deployment for benchmarks: one agent under
// test with own entries and one matching alias, and the rest of the entries
// spread over other agents and alias entries.
type population struct {
	entries []*datastore.Entry
	nodes   []*datastore.Node
	agent   spiffeid.ID
	// wantAuthorized is how many entries the agent under test gets.
	wantAuthorized int
}

// clone returns a string with the same content in a fresh allocation, as a
// value scanned from a database row would be.
func clone(s string) string { return strings.Clone(s) }

func freshID(path string) spiffeid.ID {
	return spiffeid.RequireFromString(clone("spiffe://example.org" + path))
}

// uuidLike returns a deterministic 36-character ID.
func uuidLike(n int) string {
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", n*2654435761&0xffffffff, n&0xffff, n&0xfff, (n>>12)&0xfff, n)
}

// makePopulation builds total entries: 10 entries of the agent under test,
// one alias applying to it with 5 children, 100 other aliases (one per
// cluster) with 5 children each, and the rest spread over 1,000 other agents.
// Every string is a separate allocation, as when loaded from a store.
func makePopulation(total int) population {
	const (
		otherAgents = 1000
		clusters    = 100
	)
	p := population{agent: id("/spire/agent/x509pop/agent-under-test")}
	n := 0
	add := func(parent spiffeid.ID, spiffe string, s []selector.Selector) {
		p.entries = append(p.entries, &datastore.Entry{
			ID:        uuidLike(n),
			ParentID:  freshID(parent.Path()),
			SPIFFEID:  freshID(spiffe),
			Selectors: s,
			CreatedAt: 1700000000,
		})
		n++
	}
	wsel := func(i int) []selector.Selector {
		return []selector.Selector{
			{Type: clone("k8s"), Value: clone(fmt.Sprintf("ns:ns-%d", i%50))},
			{Type: clone("k8s"), Value: clone(fmt.Sprintf("sa:sa-%d", i))},
		}
	}
	server := id("/spire/server")
	for i := 0; i < 10; i++ {
		add(p.agent, fmt.Sprintf("/own/w%d", i), wsel(i))
	}
	for c := 0; c <= clusters; c++ {
		cluster := fmt.Sprintf("/cluster/c%d", c)
		add(server, cluster, []selector.Selector{
			{Type: "x509pop", Value: clone(fmt.Sprintf("subject:ou:c%d", c))},
			{Type: "x509pop", Value: "subject:o:example"},
		})
		for w := 0; w < 5; w++ {
			add(id(cluster), fmt.Sprintf("%s/w%d", cluster, w), wsel(w))
		}
	}
	p.wantAuthorized = 10 + 1 + 5
	p.nodes = append(p.nodes, &datastore.Node{ID: p.agent, Selectors: sels("x509pop:subject:ou:c0", "x509pop:subject:o:example", "x509pop:subject:cn:agent-under-test")})
	for a := 0; a < otherAgents; a++ {
		agent := id(fmt.Sprintf("/spire/agent/x509pop/agent-%d", a))
		p.nodes = append(p.nodes, &datastore.Node{ID: agent, Selectors: sels(
			fmt.Sprintf("x509pop:subject:ou:c%d", 1+a%clusters), "x509pop:subject:o:example")})
	}
	for i := 0; len(p.entries) < total; i++ {
		agent := id(fmt.Sprintf("/spire/agent/x509pop/agent-%d", i%otherAgents))
		add(agent, fmt.Sprintf("/workload/%d", i), wsel(i))
	}
	return p
}
