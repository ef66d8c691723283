package entrycache

import (
	"unsafe"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

// maxTypes bounds the selector types the cache interns. SPIRE's plugins
// define a few dozen; past the bound a type is stored with its entry's
// other strings.
const maxTypes = 256

// compactLocked returns the copy of e the cache holds: its ParentID is
// parent (the bytes every entry of that parent shares), its selector types
// are interned, and its other strings (ID, SPIFFE ID, selector values, DNS
// names, hint) are laid end to end in one allocation. A server holds every
// entry for as long as it runs; one allocation instead of one per string
// saves each string's rounding up to an allocator size class, and the
// collector has a few objects per entry to mark instead of a dozen.
//
// e itself is not modified; the copy's slices are its own, exactly as long
// as their contents. The caller holds c.mu.
func (c *Cache) compactLocked(e *datastore.Entry, parent spiffeid.ID) *datastore.Entry {
	sid := e.SPIFFEID.String()
	n := len(e.ID) + len(sid) + len(e.Hint)
	for _, s := range e.Selectors {
		n += len(s.Value)
		if _, ok := c.types[s.Type]; !ok {
			// Room for a type not interned yet, in case the table fills up
			// before internType gets to it (a few bytes spare otherwise).
			n += len(s.Type)
		}
	}
	for _, d := range e.DNSNames {
		n += len(d)
	}
	// buf never grows past n, so the strings taken from it keep pointing
	// into the one array; bytes are only ever appended after them.
	buf := make([]byte, 0, n)
	take := func(s string) string {
		if s == "" {
			return ""
		}
		start := len(buf)
		buf = append(buf, s...)
		return unsafe.String(&buf[start], len(s))
	}

	cp := *e
	cp.ParentID = parent
	cp.ID = take(e.ID)
	if sid != "" {
		// The bytes are a copy of a valid ID's: parsing again cannot fail.
		cp.SPIFFEID = spiffeid.RequireFromString(take(sid))
	}
	cp.Hint = take(e.Hint)
	if len(e.Selectors) > 0 {
		cp.Selectors = make([]selector.Selector, len(e.Selectors))
		for i, s := range e.Selectors {
			cp.Selectors[i] = selector.Selector{Type: c.internType(s.Type, take), Value: take(s.Value)}
		}
	}
	if len(e.DNSNames) > 0 {
		cp.DNSNames = make([]string, len(e.DNSNames))
		for i, d := range e.DNSNames {
			cp.DNSNames[i] = take(d)
		}
	}
	if len(e.FederatesWith) > 0 {
		// Trust domain names are few and shared; only the slice is copied.
		cp.FederatesWith = append([]spiffeid.TrustDomain(nil), e.FederatesWith...)
	}
	return &cp
}

// internType returns the cache's copy of the selector type t, adding it
// while there is room, and otherwise t's bytes taken by take.
func (c *Cache) internType(t string, take func(string) string) string {
	if v, ok := c.types[t]; ok {
		return v
	}
	if len(c.types) >= maxTypes {
		return take(t)
	}
	v := string([]byte(t))
	c.types[v] = v
	return v
}
