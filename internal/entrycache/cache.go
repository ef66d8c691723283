// Package entrycache provides the server's in-memory index of registration
// entries and attested nodes' selectors, so that an agent's sync on any tier
// costs in proportion to that agent's own entries rather than to the total.
//
// The datastore stays the durable truth; the server writes through to it and
// mirrors every change here (PutEntry, DeleteEntry, PutNodeSelectors,
// DeleteNode), after loading everything once with Reset.
//
// # Authorized entries
//
// The server's own ID is spiffe://<td>/spire/server. An entry parented to it is
// a node alias; it applies to an agent when the alias's selectors are a
// non-empty subset of the agent's node selectors, and the agent then also "is"
// the alias's SPIFFE ID. An agent is authorized for the aliases that apply to
// it, for every entry parented to its own ID or to one of its alias IDs, and,
// transitively, for every entry parented to the SPIFFE ID of an entry it is
// already authorized for. Cycles are followed once. The server ID itself is
// never expanded as a parent, so an entry that names the server's ID as its
// SPIFFE ID cannot pull every node alias into an agent's set.
//
// Expired entries (ExpiresAt in the past) are indexed and returned like any
// other: this package has no clock, and the API layer filters them where SPIRE
// does (it still lets an agent see them until they are pruned).
//
// # Cost
//
// AuthorizedEntries does one map lookup per node selector and per parent ID
// it expands and allocates only its result. Every mutation is O(1) in the
// hash indexes (removal from a group swaps with its last element, using
// positions kept in the ID index) plus O(log n + 512) in the ID-ordered block
// list behind List. Strings are never copied per index: the cache holds one
// compact copy of each entry (its strings in one allocation, its selector
// types interned), and entries of one parent share that parent ID's bytes.
// See the benchmarks for numbers.
package entrycache

import (
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/selector"
)

// Cache indexes registration entries and node selectors. It is safe for
// concurrent use; reads share a read lock and never wait for each other.
//
// Entries returned by any method are shared and must not be modified. The
// cache stores its own compact copy of every entry put (see compactLocked),
// so the pointer a method returns differs from the one that was put; its
// contents are equal, and the caller may reuse what it put.
type Cache struct {
	serverID spiffeid.ID

	mu sync.RWMutex
	// byID holds every entry with its positions in its byParent group and
	// its sameSPIFFEID group, so that removal is O(1) however large a group
	// is.
	byID map[string]slot
	// byParent groups entries by ParentID. The group remembers its key so
	// that later entries of the same parent can share the key's bytes.
	byParent map[spiffeid.ID]*group
	// bySPIFFEID holds the entry of each SPIFFE ID that one entry has (most
	// have one), keyed by the ID's string; sameSPIFFEID the entries of each
	// SPIFFE ID that two or more have. An ID is in one of the two maps.
	// (One map of slices would cost a slice header in every slot and an
	// allocation per entry.)
	bySPIFFEID   map[string]*datastore.Entry
	sameSPIFFEID map[string][]*datastore.Entry
	// aliases files each node-alias entry with at least one selector under
	// exactly one of its selectors (the least crowded one when it was
	// filed). An agent finds the aliases that may apply to it by looking up
	// each of its own selectors; an alias whose selectors are a subset of the
	// agent's is in the bucket of one of them, and only in that one.
	aliases map[selector.Selector][]*datastore.Entry
	// nodes holds each agent's node selectors, sorted and deduplicated.
	nodes map[spiffeid.ID][]selector.Selector
	// order keeps entries sorted by ID for List.
	order ordered
	// types interns selector types (see compactLocked).
	types map[string]string
}

type slot struct {
	e          *datastore.Entry
	parentPos  int32
	spiffeIPos int32
}

type group struct {
	id      spiffeid.ID
	entries []*datastore.Entry
}

// New returns an empty cache for the trust domain td, whose server ID
// (spiffe://<td>/spire/server) is the parent of node-alias entries. With a
// zero td no entry is treated as a node alias.
func New(td spiffeid.TrustDomain) *Cache {
	c := &Cache{}
	if !td.IsZero() {
		c.serverID = idpolicy.ServerID(td)
	}
	c.clearLocked(0, 0)
	return c
}

// ServerID returns the server ID that node-alias entries are parented to.
func (c *Cache) ServerID() spiffeid.ID { return c.serverID }

func (c *Cache) clearLocked(entries, nodes int) {
	c.byID = make(map[string]slot, entries)
	c.byParent = make(map[spiffeid.ID]*group)
	c.bySPIFFEID = make(map[string]*datastore.Entry, entries)
	c.sameSPIFFEID = make(map[string][]*datastore.Entry)
	c.aliases = make(map[selector.Selector][]*datastore.Entry)
	c.nodes = make(map[spiffeid.ID][]selector.Selector, nodes)
	c.order = ordered{}
	if c.types == nil {
		c.types = map[string]string{}
	}
}

// Reset replaces the whole content of the cache with entries and the
// selectors of nodes. If several entries share an ID the last one wins; so
// does the last of several nodes with the same ID.
//
// Reset consumes entries: it sets each element to nil once it holds its own
// copy, so that a start-up load of a million entries does not keep the
// store's copy of every one alive until the last is indexed.
func (c *Cache) Reset(entries []*datastore.Entry, nodes []*datastore.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked(len(entries), len(nodes))
	all := make([]*datastore.Entry, 0, len(entries))
	dups := false
	for i, e := range entries {
		if e == nil {
			continue
		}
		entries[i] = nil
		if old, ok := c.byID[e.ID]; ok {
			c.unindexLocked(old)
			dups = true
		}
		all = append(all, c.indexLocked(e))
	}
	if dups {
		// Keep only the version of each ID that was indexed last.
		all = slices.DeleteFunc(all, func(x *datastore.Entry) bool { return c.byID[x.ID].e != x })
	}
	// The datastore lists entries by ID, so build's sort has little to do.
	c.order.build(all)
	for _, n := range nodes {
		if n == nil {
			continue
		}
		c.nodes[n.ID] = selector.Sorted(n.Selectors)
	}
}

// PutEntry inserts e, or replaces the entry with the same ID, fixing every
// index the old version was in.
func (c *Cache) PutEntry(e *datastore.Entry) {
	if e == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byID[e.ID]; ok {
		c.unindexLocked(old)
	}
	c.order.put(c.indexLocked(e))
}

// DeleteEntry removes the entry with the given ID, if present, from every
// index.
func (c *Cache) DeleteEntry(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.byID[id]
	if !ok {
		return
	}
	c.unindexLocked(s)
	delete(c.byID, id)
	c.order.remove(id)
}

// Entry returns the entry with the given ID.
func (c *Cache) Entry(id string) (*datastore.Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.byID[id]
	return s.e, ok
}

// Count returns the number of entries.
func (c *Cache) Count() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.byID)
}

// PutNodeSelectors sets (replaces) the node selectors of an attested agent,
// which decide the node aliases that apply to it. The cache keeps its own
// sorted copy of sels.
func (c *Cache) PutNodeSelectors(agentID spiffeid.ID, sels []selector.Selector) {
	sorted := selector.Sorted(sels)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[agentID] = sorted
}

// NodeSelectors returns a copy of the agent's node selectors, sorted, and
// whether the agent is known.
func (c *Cache) NodeSelectors(agentID spiffeid.ID) ([]selector.Selector, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	sels, ok := c.nodes[agentID]
	return slices.Clone(sels), ok
}

// DeleteNode forgets the agent's node selectors, so no node alias applies to
// it any more. Entries parented directly to the agent's ID are kept: they
// belong to the entry set, not to the node.
func (c *Cache) DeleteNode(agentID spiffeid.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, agentID)
}

// EntriesBySPIFFEID returns the entries whose SPIFFE ID is id, in no
// particular order.
func (c *Cache) EntriesBySPIFFEID(id spiffeid.ID) []*datastore.Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e := c.bySPIFFEID[id.String()]; e != nil {
		return []*datastore.Entry{e}
	}
	return slices.Clone(c.sameSPIFFEID[id.String()])
}

// withSPIFFEIDLocked returns the entries whose SPIFFE ID is id, in a slice
// the caller must not keep or modify.
func (c *Cache) withSPIFFEIDLocked(id spiffeid.ID) []*datastore.Entry {
	if e := c.bySPIFFEID[id.String()]; e != nil {
		return []*datastore.Entry{e}
	}
	return c.sameSPIFFEID[id.String()]
}

// EntriesByParentID returns the entries whose ParentID is id (its direct
// children), in no particular order.
func (c *Cache) EntriesByParentID(id spiffeid.ID) []*datastore.Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if g := c.byParent[id]; g != nil {
		return slices.Clone(g.entries)
	}
	return nil
}

// FindDuplicate returns an entry other than e (by ID) with the same ParentID,
// SPIFFE ID and set of selectors, which SPIRE forbids. An e with an empty ID
// (not yet created) is compared against every entry.
func (c *Cache) FindDuplicate(e *datastore.Entry) (*datastore.Entry, bool) {
	if e == nil {
		return nil, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	// Scan the smaller of the two groups that a duplicate must be in.
	cands := c.withSPIFFEIDLocked(e.SPIFFEID)
	if g := c.byParent[e.ParentID]; g == nil {
		return nil, false
	} else if len(g.entries) < len(cands) {
		cands = g.entries
	}
	var want []selector.Selector
	for _, o := range cands {
		if o.ID == e.ID || o.ParentID != e.ParentID || o.SPIFFEID != e.SPIFFEID {
			continue
		}
		if want == nil {
			want = selector.Sorted(e.Selectors)
		}
		if slices.Equal(selector.Sorted(o.Selectors), want) {
			return o, true
		}
	}
	return nil, false
}

// List walks the entries in order of ID, starting after the entry ID
// pageToken ("" starts at the beginning), and returns up to pageSize entries
// for which match returns true (every entry if match is nil; pageSize 0 means
// no limit). next is the token for the following page: the ID of the last
// entry returned, or "" when no matching entry follows.
//
// match runs under the cache's read lock and must not call the Cache.
func (c *Cache) List(match func(*datastore.Entry) bool, pageToken string, pageSize int) (entries []*datastore.Entry, next string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.order.ascendAfter(pageToken, func(e *datastore.Entry) bool {
		if match != nil && !match(e) {
			return true
		}
		if pageSize > 0 && len(entries) == pageSize {
			// One more match exists: the page is full and not the last.
			next = entries[len(entries)-1].ID
			return false
		}
		entries = append(entries, e)
		return true
	})
	return entries, next
}

// AuthorizedEntries returns the entries the agent is authorized for (see the
// package documentation), each once, in no particular order. Its cost is
// proportional to the agent's node selectors and to the result, not to the
// number of entries in the cache.
func (c *Cache) AuthorizedEntries(agentID spiffeid.ID) []*datastore.Entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if agentID == c.serverID {
		return nil
	}
	// parents lists, in order, every ID whose children are authorized:
	// the agent, its alias IDs and the SPIFFE IDs of authorized entries,
	// each once. It doubles as the BFS queue. The server ID is never added,
	// so alias entries (its children) only come from the selector match.
	var buf [idSetSmall]spiffeid.ID
	parents := idSet{list: buf[:0]}
	parents = parents.add(agentID)

	out := make([]*datastore.Entry, 0, 16)
	if nodeSels := c.nodes[agentID]; len(nodeSels) > 0 {
		for _, s := range nodeSels {
			for _, a := range c.aliases[s] {
				if !subsetOfSorted(a.Selectors, nodeSels) {
					continue
				}
				out = append(out, a)
				if a.SPIFFEID != c.serverID {
					parents = parents.add(a.SPIFFEID)
				}
			}
		}
	}
	// Every entry has one parent and every parent ID is expanded once, so
	// no entry is appended twice.
	for i := 0; i < len(parents.list); i++ {
		g := c.byParent[parents.list[i]]
		if g == nil {
			continue
		}
		out = slices.Grow(out, len(g.entries))
		for _, e := range g.entries {
			out = append(out, e)
			if e.SPIFFEID != c.serverID {
				parents = parents.add(e.SPIFFEID)
			}
		}
	}
	return out
}

// isAlias reports whether e is a node-alias entry.
func (c *Cache) isAlias(e *datastore.Entry) bool {
	return !c.serverID.IsZero() && e.ParentID == c.serverID
}

// indexLocked adds e to byID and every group and returns the pointer it
// stored (possibly a copy of e sharing its parent group's key bytes).
func (c *Cache) indexLocked(e *datastore.Entry) *datastore.Entry {
	g := c.byParent[e.ParentID]
	if g == nil {
		g = &group{id: e.ParentID}
		c.byParent[e.ParentID] = g
	}
	e = c.compactLocked(e, g.id)
	s := slot{e: e, parentPos: int32(len(g.entries))}
	g.entries = append(g.entries, e)

	key := e.SPIFFEID.String()
	if first := c.bySPIFFEID[key]; first != nil {
		// The second entry of this SPIFFE ID: the pair moves to
		// sameSPIFFEID.
		delete(c.bySPIFFEID, key)
		c.sameSPIFFEID[key] = []*datastore.Entry{first, e}
		fs := c.byID[first.ID]
		fs.spiffeIPos = 0
		c.byID[first.ID] = fs
		s.spiffeIPos = 1
	} else if same, ok := c.sameSPIFFEID[key]; ok {
		s.spiffeIPos = int32(len(same))
		c.sameSPIFFEID[key] = append(same, e)
	} else {
		c.bySPIFFEID[key] = e
	}

	c.byID[e.ID] = s
	if c.isAlias(e) && len(e.Selectors) > 0 {
		best := e.Selectors[0]
		for _, sel := range e.Selectors[1:] {
			if len(c.aliases[sel]) < len(c.aliases[best]) {
				best = sel
			}
		}
		c.aliases[best] = append(c.aliases[best], e)
	}
	return e
}

// unindexLocked removes the entry in s from every group (but not from byID
// or order, which the callers handle).
func (c *Cache) unindexLocked(s slot) {
	e := s.e
	g := c.byParent[e.ParentID]
	if moved := swapRemove(&g.entries, int(s.parentPos)); moved != nil {
		ms := c.byID[moved.ID]
		ms.parentPos = s.parentPos
		c.byID[moved.ID] = ms
	}
	if len(g.entries) == 0 {
		delete(c.byParent, e.ParentID)
	}

	key := e.SPIFFEID.String()
	if c.bySPIFFEID[key] == e {
		delete(c.bySPIFFEID, key)
	} else if same := c.sameSPIFFEID[key]; len(same) > 0 {
		if moved := swapRemove(&same, int(s.spiffeIPos)); moved != nil {
			ms := c.byID[moved.ID]
			ms.spiffeIPos = s.spiffeIPos
			c.byID[moved.ID] = ms
		}
		if len(same) == 1 {
			// One entry left: back to bySPIFFEID.
			delete(c.sameSPIFFEID, key)
			c.bySPIFFEID[key] = same[0]
			ms := c.byID[same[0].ID]
			ms.spiffeIPos = 0
			c.byID[same[0].ID] = ms
		} else {
			c.sameSPIFFEID[key] = same
		}
	}

	if c.isAlias(e) {
		for _, sel := range e.Selectors {
			bucket := c.aliases[sel]
			i := slices.Index(bucket, e)
			if i < 0 {
				continue
			}
			swapRemove(&bucket, i)
			if len(bucket) == 0 {
				delete(c.aliases, sel)
			} else {
				c.aliases[sel] = bucket
			}
			break
		}
	}
}

// swapRemove removes (*list)[i] by moving the last element into its place,
// and returns the moved element (nil if i was the last). It shrinks the
// backing array when it is mostly empty, so deleted entries leave no
// retained memory behind.
func swapRemove(list *[]*datastore.Entry, i int) (moved *datastore.Entry) {
	l := *list
	last := len(l) - 1
	if i != last {
		moved = l[last]
		l[i] = moved
	}
	l[last] = nil
	l = l[:last]
	if cap(l) > 16 && len(l) < cap(l)/4 {
		l = slices.Clip(slices.Clone(l))
	}
	*list = l
	return moved
}

// subsetOfSorted reports whether every selector of sub is in sorted.
func subsetOfSorted(sub, sorted []selector.Selector) bool {
	for _, s := range sub {
		if _, ok := slices.BinarySearchFunc(sorted, s, selector.Compare); !ok {
			return false
		}
	}
	return true
}

// idSet is an insertion-ordered set of SPIFFE IDs. Membership is a linear
// scan while the set is small (the common case of an agent with a few dozen
// entries, without allocating when list starts on the caller's stack) and a
// map lookup beyond that.
type idSet struct {
	list  []spiffeid.ID
	index map[spiffeid.ID]struct{}
}

const idSetSmall = 32

// add returns the set with id appended unless already present. It works on
// values rather than through a pointer so that a list backed by the caller's
// stack array stays there.
func (s idSet) add(id spiffeid.ID) idSet {
	if s.index != nil {
		if _, ok := s.index[id]; ok {
			return s
		}
		s.index[id] = struct{}{}
	} else {
		if slices.Contains(s.list, id) {
			return s
		}
		if len(s.list) == idSetSmall {
			s.index = make(map[spiffeid.ID]struct{}, 4*idSetSmall)
			for _, x := range s.list {
				s.index[x] = struct{}{}
			}
			s.index[id] = struct{}{}
		}
	}
	s.list = append(s.list, id)
	return s
}
