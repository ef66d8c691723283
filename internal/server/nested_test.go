package server_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/server"
)

// staticSource serves one SVID and one bundle, as a co-located agent's
// Workload API would.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle, nil
}

// startChild starts a downstream server under parent, authenticated by the
// SVID of a downstream entry parented to an agent attested to parent.
func startChild(t *testing.T, parent *harness, name string) *harness {
	t.Helper()
	up := parentLink(t, parent, name)
	return startServer(t, func(c *server.Config) {
		c.Name, c.Parent, c.ParentBundleSyncInterval = name, up, 200*time.Millisecond
		c.CATTL = 2 * time.Hour
	})
}

func jwtBundleOf(t *testing.T, h *harness) *jwtbundle.Bundle {
	t.Helper()
	b := must(bundlev1.NewBundleClient(h.admin).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{}))(t)
	jb := jwtbundle.New(td)
	for _, k := range b.JwtAuthorities {
		jb.AddJWTAuthority(k.KeyId, must(x509.ParsePKIXPublicKey(k.PublicKey))(t))
	}
	return jb
}

func TestThreeTiers(t *testing.T) {
	root := startServer(t)
	regional := startChild(t, root, "regional")
	leaf := startChild(t, regional, "leaf")

	rootCA, _ := root.srv.CA().X509CA()
	regCA, regChain := regional.srv.CA().X509CA()
	leafCA, leafChain := leaf.srv.CA().X509CA()
	if regCA.CheckSignatureFrom(rootCA) != nil {
		t.Fatalf("regional CA %v is not signed by the root CA", regCA.Subject)
	}
	if leafCA.CheckSignatureFrom(regCA) != nil {
		t.Fatalf("leaf CA %v is not signed by the regional CA", leafCA.Subject)
	}
	if len(regChain) != 1 || len(leafChain) != 2 {
		t.Errorf("chains after the CA: regional %d, leaf %d certificates; want 1 and 2", len(regChain), len(leafChain))
	}
	if leafCA.NotAfter.After(regCA.NotAfter) || regCA.NotAfter.After(rootCA.NotAfter) {
		t.Errorf("a child CA outlives its parent: root %v regional %v leaf %v", rootCA.NotAfter, regCA.NotAfter, leafCA.NotAfter)
	}

	// Every tier's X.509 bundle is the root's: a leaf workload SVID verifies
	// with nothing but the root tier's bundle.
	rootOnly := root.snapshotBundle()
	for _, h := range []*harness{regional, leaf} {
		got := h.snapshotBundle().X509Authorities()
		if len(got) != 1 || !got[0].Equal(rootCA) {
			t.Errorf("tier bundle %v, want only the root CA", got)
		}
	}
	agent := leaf.newAgent()
	wl := leaf.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/leaf/app"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
	svid := must(leaf.workloadSVID(agent, wl))(t)
	if len(svid.Certificates) != 3 {
		t.Errorf("leaf workload chain has %d certificates, want leaf + leaf CA + regional CA", len(svid.Certificates))
	}
	if _, _, err := x509svid.Verify(svid.Certificates, rootOnly); err != nil {
		t.Fatalf("leaf workload SVID does not verify against the root bundle: %v", err)
	}

	// JWT keys flow up and back down: a JWT-SVID from the leaf validates
	// with the root's bundle, and the root's with the leaf's.
	waitFor(t, "every tier's JWT keys in every bundle", func() bool {
		r, g, l := jwtBundleOf(t, root), jwtBundleOf(t, regional), jwtBundleOf(t, leaf)
		return len(r.JWTAuthorities()) == 3 && len(g.JWTAuthorities()) == 3 && len(l.JWTAuthorities()) == 3
	})
	resp := must(svidv1.NewSVIDClient(leaf.dial(agent)).NewJWTSVID(ctxT(t), &svidv1.NewJWTSVIDRequest{EntryId: wl, Audience: []string{"x"}}))(t)
	if _, err := jwtsvid.ParseAndValidate(resp.Svid.Token, jwtBundleOf(t, root), []string{"x"}); err != nil {
		t.Fatalf("leaf JWT-SVID against the root bundle: %v", err)
	}
	m := must(svidv1.NewSVIDClient(root.admin).MintJWTSVID(ctxT(t), &svidv1.MintJWTSVIDRequest{Id: protoID("/r"), Audience: []string{"y"}}))(t)
	if _, err := jwtsvid.ParseAndValidate(m.Svid.Token, jwtBundleOf(t, leaf), []string{"y"}); err != nil {
		t.Fatalf("root JWT-SVID against the leaf bundle: %v", err)
	}
}

// TestNewDownstreamX509CARequiresDownstreamEntry: a plain workload SVID of
// the same agent cannot obtain a CA.
func TestNewDownstreamX509CARequiresDownstreamEntry(t *testing.T) {
	root := startServer(t)
	agent := root.newAgent()
	id := root.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/not-a-tier"), Selectors: []*types.Selector{sel("unix", "uid:0")}})
	svid := must(root.workloadSVID(agent, id))(t)
	up := must(downstream.New(ctxT(t), downstream.Config{TrustDomain: td, ParentAddress: root.cfg.ListenAddr,
		Source: staticSource{svid: svid, bundle: root.snapshotBundle()}}))(t)
	defer up.Close()
	if _, err := up.MintX509CA(ctxT(t), newKey(t), time.Hour); err == nil {
		t.Fatal("a non-downstream SVID obtained an intermediate CA")
	}
}

func TestNewDownstreamX509CARefusesBadRequests(t *testing.T) {
	root := startServer(t, func(c *server.Config) { c.CATTL = 4 * time.Hour })
	agent := root.newAgent()
	id := root.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/tier/x"), Selectors: []*types.Selector{sel("unix", "uid:0")}, Downstream: true})
	svid := must(root.workloadSVID(agent, id))(t)
	client := svidv1.NewSVIDClient(root.dial(svid))
	key := newKey(t)
	foreign := csrFor(t, key, spiffeid.RequireTrustDomainFromString("evil.org").ID().URL())
	if _, err := client.NewDownstreamX509CA(ctxT(t), &svidv1.NewDownstreamX509CARequest{Csr: foreign}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("CSR for another trust domain: %v, want InvalidArgument", err)
	}
	own := csrFor(t, key, td.ID().URL())
	if _, err := client.NewDownstreamX509CA(ctxT(t), &svidv1.NewDownstreamX509CARequest{Csr: own, PreferredTtl: int32((8 * time.Hour).Seconds())}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("preferred_ttl longer than the parent's CA TTL: %v, want InvalidArgument", err)
	}
	resp, err := client.NewDownstreamX509CA(ctxT(t), &svidv1.NewDownstreamX509CARequest{Csr: own, PreferredTtl: int32((2 * time.Hour).Seconds())})
	if err != nil {
		t.Fatalf("a valid request: %v", err)
	}
	c := must(x509.ParseCertificate(resp.CaCertChain[0]))(t)
	if got := c.NotAfter.Sub(time.Now()); got > 2*time.Hour || got < 2*time.Hour-time.Minute {
		t.Errorf("intermediate lifetime %v, want the 2h asked for", got)
	}
}
