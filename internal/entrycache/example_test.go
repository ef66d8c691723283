package entrycache_test

import (
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/entrycache"
	"github.com/arborid/arbor/internal/selector"
)

func Example() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	agent := spiffeid.RequireFromPath(td, "/spire/agent/x509pop/abc")
	cluster := spiffeid.RequireFromPath(td, "/cluster/prod")

	c := entrycache.New(td)
	c.PutNodeSelectors(agent, []selector.Selector{{Type: "x509pop", Value: "subject:ou:prod"}})
	// A node alias: every agent with the selector also "is" /cluster/prod.
	c.PutEntry(&datastore.Entry{ID: "alias", ParentID: c.ServerID(), SPIFFEID: cluster,
		Selectors: []selector.Selector{{Type: "x509pop", Value: "subject:ou:prod"}}})
	c.PutEntry(&datastore.Entry{ID: "web", ParentID: cluster, SPIFFEID: spiffeid.RequireFromPath(td, "/web"),
		Selectors: []selector.Selector{{Type: "unix", Value: "uid:1000"}}})
	c.PutEntry(&datastore.Entry{ID: "own", ParentID: agent, SPIFFEID: spiffeid.RequireFromPath(td, "/own"),
		Selectors: []selector.Selector{{Type: "unix", Value: "uid:0"}}})

	var got []string
	for _, e := range c.AuthorizedEntries(agent) {
		got = append(got, e.ID)
	}
	slices.Sort(got)
	fmt.Println(got)
	// Output: [alias own web]
}
