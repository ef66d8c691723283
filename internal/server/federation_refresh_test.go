package server_test

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/server"
)

// TestRootRefreshesFederatedBundles: a root tier with a federation
// relationship fetches the other trust domain's bundle from its endpoint by
// itself (no RefreshBundle call), follows changes there at the served
// refresh hint, and keeps the last good bundle while the endpoint is down.
func TestRootRefreshesFederatedBundles(t *testing.T) {
	a := startServer(t, func(c *server.Config) {
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: time.Second}
	})
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	b := startServer(t, func(c *server.Config) {
		c.TrustDomain = partner
		c.FederationRefreshFloor = 200 * time.Millisecond
	})
	aBundle := a.snapshot().Bundle
	seed := &types.Bundle{TrustDomain: td.Name(), X509Authorities: aBundle.X509Authorities}
	resp, err := trustdomainv1.NewTrustDomainClient(b.admin).BatchCreateFederationRelationship(ctxT(t), &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{{
			TrustDomain:           td.Name(),
			BundleEndpointUrl:     "https://" + a.srv.BundleEndpointAddr().String(),
			BundleEndpointProfile: &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: "spiffe://example.org/spire/server"}},
			TrustDomainBundle:     seed,
		}},
	})
	if err != nil || resp.Results[0].Status.Code != 0 {
		t.Fatalf("BatchCreateFederationRelationship: %v %v", err, resp.GetResults())
	}
	held := func() *types.Bundle {
		got, err := bundlev1.NewBundleClient(b.admin).GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
		if err != nil {
			return nil
		}
		return got
	}
	waitFor(t, "the root fetching the federated bundle (with its JWT keys) by itself", func() bool {
		h := held()
		return h != nil && len(h.JwtAuthorities) == len(aBundle.JwtAuthorities) && len(h.JwtAuthorities) > 0
	})

	extra := selfSignedCA(t, "rotated in")
	if _, err := bundlev1.NewBundleClient(a.admin).AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: extra.Raw}}}); err != nil {
		t.Fatal(err)
	}
	want := len(aBundle.X509Authorities) + 1
	start := time.Now()
	waitFor(t, "a change at the endpoint reaching the federated bundle", func() bool {
		h := held()
		return h != nil && len(h.X509Authorities) == want
	})
	t.Logf("change at the endpoint held by the other trust domain after %v (refresh hint 1s, floor 200ms)", time.Since(start).Round(10*time.Millisecond))

	a.stop()
	time.Sleep(1500 * time.Millisecond) // several refresh attempts fail
	if h := held(); h == nil || len(h.X509Authorities) != want {
		t.Errorf("with the endpoint down the federated bundle is %v, want the last good one (%d X.509 authorities)", h, want)
	}
}

// TestFederatedBundlesFlowDownTheTree: the root fetches a foreign trust
// domain's bundle from its endpoint; a downstream tier receives it from the
// root through the bundle sync it already does (it has no relationship and
// no path to the foreign endpoint of its own), and follows a change.
func TestFederatedBundlesFlowDownTheTree(t *testing.T) {
	partnerTD := spiffeid.RequireTrustDomainFromString("partner.test")
	partner := startServer(t, func(c *server.Config) {
		c.TrustDomain = partnerTD
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: time.Second}
	})
	c := newClock()
	root := startServerOn(t, c, func(cfg *server.Config) { cfg.FederationRefreshFloor = 200 * time.Millisecond })
	pb := partner.snapshot().Bundle
	resp, err := trustdomainv1.NewTrustDomainClient(root.admin).BatchCreateFederationRelationship(ctxT(t), &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{{
			TrustDomain:           partnerTD.Name(),
			BundleEndpointUrl:     "https://" + partner.srv.BundleEndpointAddr().String(),
			BundleEndpointProfile: &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: "spiffe://partner.test/spire/server"}},
			TrustDomainBundle:     &types.Bundle{TrustDomain: partnerTD.Name(), X509Authorities: pb.X509Authorities},
		}},
	})
	if err != nil || resp.Results[0].Status.Code != 0 {
		t.Fatalf("BatchCreateFederationRelationship: %v %v", err, resp.GetResults())
	}
	child := startChildOn(t, root, "child", 200*time.Millisecond)
	heldBy := func(h *harness) *types.Bundle {
		got, err := bundlev1.NewBundleClient(h.admin).GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: partnerTD.Name()})
		if err != nil {
			return nil
		}
		return got
	}
	waitFor(t, "the child holding the partner's bundle, JWT keys included", func() bool {
		h := heldBy(child)
		return h != nil && len(h.JwtAuthorities) == len(pb.JwtAuthorities) && len(h.JwtAuthorities) > 0
	})
	extra := selfSignedCA(t, "partner rotated")
	if _, err := bundlev1.NewBundleClient(partner.admin).AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: extra.Raw}}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the partner's change reaching the child", func() bool {
		h := heldBy(child)
		return h != nil && len(h.X509Authorities) == len(pb.X509Authorities)+1
	})
	t.Logf("a change at the foreign endpoint reached the child after %v (endpoint hint 1s, root refresh floor 200ms, child bundle sync 200ms)", time.Since(start).Round(10*time.Millisecond))
}

// TestConfiguredFederationsAreAppliedAtStart: relationships from the
// topology (server.Config.Federations) are created at start, their bootstrap
// bundle (here a PEM file) stored for the first https_spiffe contact, and the
// root then fetches the bundle by itself; a restart with changed settings
// updates the relationship.
func TestConfiguredFederationsAreAppliedAtStart(t *testing.T) {
	partnerTD := spiffeid.RequireTrustDomainFromString("partner.test")
	partner := startServer(t, func(c *server.Config) {
		c.TrustDomain = partnerTD
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: time.Second}
	})
	pb := partner.snapshot().Bundle
	var pemData []byte
	for _, a := range pb.X509Authorities {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})...)
	}
	bootstrap := filepath.Join(shortDir(t), "partner.pem")
	if err := os.WriteFile(bootstrap, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	fed := server.FederationConfig{TrustDomain: partnerTD, BundleEndpointURL: "https://" + partner.srv.BundleEndpointAddr().String(),
		Profile: "https_spiffe", EndpointID: spiffeid.RequireFromPath(partnerTD, "/spire/server"), BootstrapBundle: bootstrap}
	root := startServer(t, func(c *server.Config) {
		c.Federations = []server.FederationConfig{fed}
		c.FederationRefreshFloor = 200 * time.Millisecond
	})
	waitFor(t, "the root fetching the configured federation's bundle", func() bool {
		got, err := bundlev1.NewBundleClient(root.admin).GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: partnerTD.Name()})
		return err == nil && len(got.JwtAuthorities) == len(pb.JwtAuthorities) && len(got.JwtAuthorities) > 0
	})
	fed.BundleEndpointURL = "https://127.0.0.1:1"
	root.cfg.Federations = []server.FederationConfig{fed}
	root.restart()
	r, err := trustdomainv1.NewTrustDomainClient(root.admin).GetFederationRelationship(ctxT(t), &trustdomainv1.GetFederationRelationshipRequest{TrustDomain: partnerTD.Name()})
	if err != nil || r.BundleEndpointUrl != fed.BundleEndpointURL {
		t.Errorf("after a restart with a changed endpoint: relationship %v, %v; want URL %s", r, err, fed.BundleEndpointURL)
	}
}

// TestRegionalNamedByFetchedByFetches: a downstream tier given a federation
// (the topology's fetched_by) fetches the foreign endpoint itself: its leaf
// receives the bundle from it through the bundle sync and follows a change,
// and the root, which holds no relationship, has neither the relationship
// nor the bundle.
func TestRegionalNamedByFetchedByFetches(t *testing.T) {
	partnerTD := spiffeid.RequireTrustDomainFromString("partner.test")
	partner := startServer(t, func(c *server.Config) {
		c.TrustDomain = partnerTD
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: time.Second}
	})
	pb := partner.snapshot().Bundle
	root := startServer(t)
	regional := startChildOn(t, root, "regional", 200*time.Millisecond, func(c *server.Config) {
		c.Federations = []server.FederationConfig{partnerFederation(t, partner, pb)}
		c.FederationRefreshFloor = 200 * time.Millisecond
	})
	leaf := startChildOn(t, regional, "leaf", 200*time.Millisecond)
	waitFor(t, "the regional fetching the partner's bundle (JWT keys come only from the endpoint)", func() bool {
		h := federatedOf(t, regional, partnerTD)
		return h != nil && len(h.JwtAuthorities) == len(pb.JwtAuthorities) && len(h.JwtAuthorities) > 0
	})
	waitFor(t, "the leaf receiving the partner's bundle from the regional", func() bool {
		h := federatedOf(t, leaf, partnerTD)
		return h != nil && len(h.JwtAuthorities) == len(pb.JwtAuthorities) && len(h.JwtAuthorities) > 0
	})
	extra := selfSignedCA(t, "partner rotated")
	if _, err := bundlev1.NewBundleClient(partner.admin).AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: extra.Raw}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the partner's change reaching the leaf through the regional", func() bool {
		h := federatedOf(t, leaf, partnerTD)
		return h != nil && len(h.X509Authorities) == len(pb.X509Authorities)+1
	})
	if h := federatedOf(t, root, partnerTD); h != nil {
		t.Errorf("the root holds the partner's bundle %v; only the regional's subtree should", h)
	}
	rels := must(trustdomainv1.NewTrustDomainClient(root.admin).ListFederationRelationships(ctxT(t), &trustdomainv1.ListFederationRelationshipsRequest{}))(t)
	if n := len(rels.FederationRelationships); n != 0 {
		t.Errorf("the root holds %d federation relationships, want none: it does not fetch", n)
	}
}

// TestOwnFetchWinsOverTheParentsBundle: a tier that fetches a trust
// domain's bundle itself keeps its own fetch when its parent holds another
// bundle of that trust domain; the bundle sync does not overwrite it.
func TestOwnFetchWinsOverTheParentsBundle(t *testing.T) {
	partnerTD := spiffeid.RequireTrustDomainFromString("partner.test")
	partner := startServer(t, func(c *server.Config) {
		c.TrustDomain = partnerTD
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: time.Second}
	})
	pb := partner.snapshot().Bundle
	root := startServer(t)
	decoy := selfSignedCA(t, "not partner's")
	resp := must(bundlev1.NewBundleClient(root.admin).BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{
		Bundle: []*types.Bundle{{TrustDomain: partnerTD.Name(), X509Authorities: []*types.X509Certificate{{Asn1: decoy.Raw}}}}}))(t)
	if st := resp.Results[0].GetStatus(); st.GetCode() != 0 {
		t.Fatalf("BatchSetFederatedBundle: %v", st)
	}
	regional := startChildOn(t, root, "regional", 200*time.Millisecond, func(c *server.Config) {
		c.Federations = []server.FederationConfig{partnerFederation(t, partner, pb)}
		c.FederationRefreshFloor = 200 * time.Millisecond
	})
	fetched := func() bool {
		h := federatedOf(t, regional, partnerTD)
		return h != nil && len(h.JwtAuthorities) > 0 && !holdsDER(h, decoy.Raw)
	}
	waitFor(t, "the regional holding its own fetch of the partner's bundle", fetched)
	for range 3 {
		if _, err := regional.srv.SyncParentBundle(ctxT(t)); err != nil {
			t.Fatalf("SyncParentBundle: %v", err)
		}
		if !fetched() {
			t.Fatalf("after a bundle sync the regional holds %v, want its own fetch (the parent's %q bundle is not partner's)",
				federatedOf(t, regional, partnerTD), partnerTD)
		}
	}
}

// partnerFederation is a configured https_spiffe relationship with partner's
// bundle endpoint, bootstrapped with pb's X.509 authorities as a PEM file.
func partnerFederation(t *testing.T, partner *harness, pb *types.Bundle) server.FederationConfig {
	t.Helper()
	var pemData []byte
	for _, a := range pb.X509Authorities {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})...)
	}
	bootstrap := filepath.Join(shortDir(t), "partner.pem")
	if err := os.WriteFile(bootstrap, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	td := partner.cfg.TrustDomain
	return server.FederationConfig{TrustDomain: td, BundleEndpointURL: "https://" + partner.srv.BundleEndpointAddr().String(),
		Profile: "https_spiffe", EndpointID: spiffeid.RequireFromPath(td, "/spire/server"), BootstrapBundle: bootstrap}
}

// federatedOf is the bundle of td that h holds, or nil.
func federatedOf(t *testing.T, h *harness, td spiffeid.TrustDomain) *types.Bundle {
	got, err := bundlev1.NewBundleClient(h.admin).GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
	if err != nil {
		return nil
	}
	return got
}

func holdsDER(b *types.Bundle, der []byte) bool {
	for _, a := range b.X509Authorities {
		if bytes.Equal(a.Asn1, der) {
			return true
		}
	}
	return false
}
