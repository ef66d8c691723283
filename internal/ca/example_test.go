package ca_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/root"
)

// A root tier: the upstream self-signs the CA, so SVIDs carry only the leaf
// and verify against the bundle's root.
func Example() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	m, err := ca.New(ca.Config{
		TrustDomain: td,
		Upstream:    &root.SelfSigned{TrustDomain: td},
		Bundles:     newMemBundles(nil),
		CATTL:       24 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Init(ctx); err != nil {
		log.Fatal(err)
	}
	key, err := ca.KeyTypeECP256.Generate(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{
		ID:        spiffeid.RequireFromPath(td, "/web"),
		PublicKey: key.Public(),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(chain), chain[0].URIs[0], chain[0].NotAfter.Sub(chain[0].NotBefore))
	// Output: 1 spiffe://example.org/web 1h0m10s
}
