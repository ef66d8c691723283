package api

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/entrycache"
	"github.com/arborid/arbor/internal/selector"
)

// The per-entry check minting uses agrees with the agent's listed
// authorized entries on random trees: nested parents, cycles, node aliases
// that apply or not (also with no selectors), entries named after the
// server or an agent, expired entries, an unknown agent and the server
// itself as the caller.
func TestAuthorizerMatchesAuthorizedEntries(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 18))
	serverID := idOf("/spire/server")
	agents := []spiffeid.ID{idOf("/spire/agent/join_token/a"), idOf("/spire/agent/join_token/b"), idOf("/spire/agent/join_token/c")}
	var workloads []spiffeid.ID
	for i := range 10 {
		workloads = append(workloads, idOf(fmt.Sprintf("/w/%d", i)))
	}
	pool := []selector.Selector{{Type: "k8s", Value: "ns:a"}, {Type: "k8s", Value: "ns:b"}, {Type: "tpm", Value: "hash:1"}, {Type: "aws", Value: "region:eu"}}
	randSels := func(max int) []selector.Selector {
		var out []selector.Selector
		for range rng.IntN(max + 1) {
			if s := pool[rng.IntN(len(pool))]; !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	pick := func(ids []spiffeid.ID) spiffeid.ID { return ids[rng.IntN(len(ids))] }
	const now = 1000
	checked, allowed := 0, 0
	for round := range 300 {
		c := entrycache.New(td)
		for _, a := range agents {
			if rng.IntN(4) > 0 {
				c.PutNodeSelectors(a, randSels(4))
			}
		}
		var ids []string
		for i := range 40 {
			e := &datastore.Entry{ID: fmt.Sprintf("e%02d", i), Selectors: randSels(3)}
			switch r := rng.IntN(10); {
			case r < 3:
				e.ParentID = pick(agents)
			case r < 5:
				e.ParentID = serverID
			default:
				e.ParentID = pick(workloads)
			}
			switch r := rng.IntN(30); {
			case r == 0:
				e.SPIFFEID = serverID
			case r == 1:
				e.SPIFFEID = pick(agents)
			default:
				e.SPIFFEID = pick(workloads)
			}
			if rng.IntN(5) == 0 {
				e.ExpiresAt = now - 1
			} else if rng.IntN(5) == 0 {
				e.ExpiresAt = now + 1
			}
			c.PutEntry(e)
			ids = append(ids, e.ID)
		}
		callers := append(slices.Clone(agents), serverID, idOf("/spire/agent/join_token/unknown"))
		for _, caller := range callers {
			listed := map[string]bool{}
			for _, e := range c.AuthorizedEntries(caller) {
				if e.ExpiresAt == 0 || e.ExpiresAt > now {
					listed[e.ID] = true
				}
			}
			authz := newAuthorizer(c, caller)
			for _, id := range append(ids, "missing") {
				_, got := authz.entry(id, now)
				if got != listed[id] {
					e, _ := c.Entry(id)
					t.Fatalf("round %d: authorizer.entry(%s) for %v = %v, but AuthorizedEntries lists it: %v (entry %+v)", round, id, caller, got, listed[id], e)
				}
				checked++
				if got {
					allowed++
				}
			}
		}
	}
	// The trees must exercise both answers.
	if allowed == 0 || allowed == checked {
		t.Fatalf("%d of %d checks authorized: the random trees do not test both answers", allowed, checked)
	}
	t.Logf("%d checks, %d authorized", checked, allowed)
}
