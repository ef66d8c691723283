package api

import (
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/entrycache"
	"github.com/arborid/arbor/internal/selector"
)

// authorizer answers whether one agent is authorized for a given entry, by
// walking up from the entry through its parents, with the rule of
// entrycache.Cache.AuthorizedEntries (see entrycache's package
// documentation). Minting calls it for each requested entry: listing the
// agent's whole authorized set instead costs in proportion to that set on
// every call, which made minting an SVID for each of an agent's 100k
// entries quadratic (every batch of a few hundred CSRs listed all 100k).
type authorizer struct {
	cache    *entrycache.Cache
	agentID  spiffeid.ID
	serverID spiffeid.ID
	nodeSels []selector.Selector // sorted
}

func newAuthorizer(c *entrycache.Cache, agentID spiffeid.ID) *authorizer {
	sels, _ := c.NodeSelectors(agentID)
	return &authorizer{cache: c, agentID: agentID, serverID: c.ServerID(), nodeSels: sels}
}

// entry returns the entry with the given ID if the agent is authorized for
// it and it has not expired at now (Unix seconds), as
// Service.authorizedEntries would list it.
func (a *authorizer) entry(id string, now int64) (*datastore.Entry, bool) {
	e, ok := a.cache.Entry(id)
	if !ok || (e.ExpiresAt != 0 && e.ExpiresAt <= now) || !a.allows(e) {
		return nil, false
	}
	return e, true
}

// allows reports whether e is among the agent's authorized entries.
func (a *authorizer) allows(e *datastore.Entry) bool {
	if a.agentID == a.serverID {
		return false
	}
	var seen map[string]bool
	// An entry is authorized when it is a node alias that applies to the
	// agent, when its parent is the agent, or when its parent is the
	// SPIFFE ID of an authorized entry other than the server ID: follow
	// the last case upwards, each entry once (cycles).
	pending := []*datastore.Entry{e}
	for len(pending) > 0 {
		e := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		switch {
		case !a.serverID.IsZero() && e.ParentID == a.serverID:
			if a.aliasApplies(e) {
				return true
			}
			continue
		case e.ParentID == a.agentID:
			return true
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		for _, p := range a.cache.EntriesBySPIFFEID(e.ParentID) {
			if !seen[p.ID] {
				pending = append(pending, p)
			}
		}
	}
	return false
}

// aliasApplies reports whether a node-alias entry's selectors are a
// non-empty subset of the agent's node selectors.
func (a *authorizer) aliasApplies(e *datastore.Entry) bool {
	if len(e.Selectors) == 0 {
		return false
	}
	for _, s := range e.Selectors {
		if _, ok := slices.BinarySearchFunc(a.nodeSels, s, selector.Compare); !ok {
			return false
		}
	}
	return true
}
