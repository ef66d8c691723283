package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"runtime"
	"testing"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

// fiftyDomains is the federation count of the cost measurement.
const fiftyDomains = 50

// TestFiftyFederatedTrustDomainsCost measures what 50 federated trust
// domains (each bundle one P-256 root and one JWT key, the shape of a SPIRE
// server's) cost a two-tier tree: the heap both tiers hold per federated
// bundle, and the payload of the child's parent bundle sync, each against the
// bundle's own encoded size. It requires that the child holds every one of
// them (a tier keeps them all: an entry created on it may federate with any
// of them at any time, and it has no other way to get the bundle; agents ask
// only for the trust domains their entries federate with, see
// agent/federation_test.go). The numbers go to the log (-v); no timing is
// asserted.
func TestFiftyFederatedTrustDomainsCost(t *testing.T) {
	root := startServer(t)
	child := startChild(t, root, "leaf")
	bundles := make([]*types.Bundle, fiftyDomains)
	encoded := 0
	for i := range bundles {
		name := fmt.Sprintf("partner%02d.test", i)
		ca := selfSignedCA(t, name+" root")
		jwtKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub := must(x509.MarshalPKIXPublicKey(jwtKey.Public()))(t)
		bundles[i] = &types.Bundle{TrustDomain: name, RefreshHint: 300, SequenceNumber: 1,
			X509Authorities: []*types.X509Certificate{{Asn1: ca.Raw}},
			JwtAuthorities:  []*types.JWTKey{{KeyId: fmt.Sprintf("kid-%02d", i), PublicKey: pub, ExpiresAt: ca.NotAfter.Unix()}}}
		encoded += proto.Size(bundles[i])
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	resp := must(bundlev1.NewBundleClient(root.admin).BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{Bundle: bundles}))(t)
	for i, r := range resp.Results {
		if r.GetStatus().GetCode() != 0 {
			t.Fatalf("BatchSetFederatedBundle %s: %v", bundles[i].TrustDomain, r.GetStatus())
		}
	}
	held := func(h *harness) int {
		n := 0
		token := ""
		for {
			page := must(bundlev1.NewBundleClient(h.admin).ListFederatedBundles(ctxT(t), &bundlev1.ListFederatedBundlesRequest{PageSize: 100, PageToken: token}))(t)
			n += len(page.Bundles)
			if token = page.NextPageToken; token == "" {
				return n
			}
		}
	}
	waitFor(t, "the child holding all 50 federated bundles", func() bool { return held(child) == fiftyDomains })
	after := heap()

	// The child's parent sync asks for the whole list every interval (the
	// same request downstream.Upstream.FetchBundle makes); its size is what
	// one sync carries.
	syncBytes := 0
	token := ""
	for {
		page := must(bundlev1.NewBundleClient(root.admin).ListFederatedBundles(ctxT(t), &bundlev1.ListFederatedBundlesRequest{PageSize: 100, PageToken: token}))(t)
		syncBytes += proto.Size(page)
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	own := proto.Size(must(bundlev1.NewBundleClient(root.admin).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{}))(t))
	perBundle := float64(encoded) / fiftyDomains
	perTier := 0.0
	if after > before {
		perTier = float64(after-before) / (2 * fiftyDomains)
	}
	t.Logf("50 federated trust domains, bundles of %.0f B encoded each: heap %.0f B per bundle per tier (%.1f× its encoded size; root and child together %.0f KiB)",
		perBundle, perTier, perTier/perBundle, float64(after-before)/1024)
	t.Logf("the child's parent bundle sync carries %d B of federated bundles (%.2f× their encoded sum, %.1f× the trust domain's own bundle of %d B)",
		syncBytes, float64(syncBytes)/float64(encoded), float64(syncBytes)/float64(own), own)
	if syncBytes < encoded {
		t.Fatalf("the federated bundle list is %d B, less than the %d B of bundles it must hold", syncBytes, encoded)
	}
}
