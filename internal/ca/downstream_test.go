package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/upstream"
)

// parentUpstream makes a tier downstream of parent, the way the downstream
// package does over the server API: the parent signs the CA and takes the
// JWT keys into its bundle.
type parentUpstream struct {
	parent        *ca.Manager
	parentBundles *memBundles
	published     []upstream.JWTKey
}

var (
	_ upstream.Authority    = (*parentUpstream)(nil)
	_ upstream.JWTPublisher = (*parentUpstream)(nil)
)

func (u *parentUpstream) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
	chain, err := u.parent.SignDownstreamX509CA(ctx, key.Public(), ttl)
	if err != nil {
		return nil, err
	}
	b, err := u.parentBundles.FetchBundle(ctx, td)
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Cert)
		if err != nil {
			return nil, err
		}
		roots = append(roots, c)
	}
	return &upstream.MintedCA{Cert: chain[0], Intermediates: chain[1:], Roots: roots}, nil
}

func (u *parentUpstream) PublishJWTKey(ctx context.Context, k upstream.JWTKey) ([]upstream.JWTKey, error) {
	u.published = append(u.published, k)
	b, err := u.parentBundles.UpdateBundle(ctx, td, func(b *datastore.Bundle) (*datastore.Bundle, error) {
		out := cloneBundle(b)
		out.JWTAuthorities = append(out.JWTAuthorities, datastore.JWTAuthority{KeyID: k.KeyID, PublicKey: k.PublicKey, ExpiresAt: k.ExpiresAt})
		out.SequenceNumber++
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	var keys []upstream.JWTKey
	for _, a := range b.JWTAuthorities {
		keys = append(keys, upstream.JWTKey{KeyID: a.KeyID, PublicKey: a.PublicKey, ExpiresAt: a.ExpiresAt})
	}
	return keys, nil
}

// child returns an initialized tier below parent.
func child(t *testing.T, parent *env, caTTL time.Duration) (*env, *parentUpstream) {
	t.Helper()
	up := &parentUpstream{parent: parent.m, parentBundles: parent.bundles}
	e := &env{clock: parent.clock, bundles: newMemBundles(t)}
	e.cfg = ca.Config{TrustDomain: td, Upstream: up, JWTPublisher: up, ChooseDownstreamCA: downstream.ChooseSigningCA, Bundles: e.bundles, CATTL: caTTL, Now: parent.clock.Now}
	e.m = e.start(t)
	return e, up
}

func TestSignDownstreamX509CA(t *testing.T) {
	e := newEnv(t, nil)
	rootCert, _ := e.m.X509CA()
	key := mustKey(t, ca.KeyTypeECP384)
	chain, err := e.m.SignDownstreamX509CA(context.Background(), key.Public(), time.Hour)
	if err != nil {
		t.Fatalf("SignDownstreamX509CA: %v", err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain has %d certificates, want the child CA only (the root is self-signed)", len(chain))
	}
	c := chain[0]
	uris := []string{}
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"URIs", uris, []string{"spiffe://example.org"}},
		{"IsCA", c.IsCA && c.BasicConstraintsValid, true},
		{"KeyUsage", c.KeyUsage, x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		{"has SubjectKeyId", len(c.SubjectKeyId) > 0, true},
		{"AuthorityKeyId", c.AuthorityKeyId, rootCert.SubjectKeyId},
		{"NotAfter", c.NotAfter, epoch.Add(time.Hour)},
		{"NotBefore", c.NotBefore, epoch.Add(-10 * time.Second)},
	}
	for _, ch := range checks {
		if diff := cmp.Diff(ch.want, ch.got); diff != "" {
			t.Errorf("child CA %s (-want +got):\n%s", ch.what, diff)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(rootCert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: epoch, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("child CA does not chain to the root: %v", err)
	}

	// Capped by the parent's CA.
	chain, err = e.m.SignDownstreamX509CA(context.Background(), key.Public(), 1000*time.Hour)
	if err != nil || !chain[0].NotAfter.Equal(rootCert.NotAfter) {
		t.Errorf("long TTL: NotAfter = %v, %v; want the root's %v", chain[0].NotAfter, err, rootCert.NotAfter)
	}

	for name, pub := range map[string]crypto.PublicKey{"nil key": nil, "string key": "key"} {
		if _, err := e.m.SignDownstreamX509CA(context.Background(), pub, 0); !errors.Is(err, ca.ErrInvalidArgument) {
			t.Errorf("%s: error = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := e.m.SignDownstreamX509CA(context.Background(), key.Public(), -time.Hour); !errors.Is(err, ca.ErrInvalidArgument) {
		t.Errorf("negative TTL: error = %v, want ErrInvalidArgument", err)
	}
}

func TestThreeTiers(t *testing.T) {
	start := realEpoch() // jwtsvid.ParseAndValidate below uses the real clock
	rootTier := newEnvAt(t, start, nil)
	regional, regionalUp := child(t, rootTier, 24*time.Hour)
	leafTier, _ := child(t, regional, 24*time.Hour)
	rootCert, _ := rootTier.m.X509CA()
	regionalCA, regionalChain := regional.m.X509CA()
	leafCA, leafChain := leafTier.m.X509CA()

	// Intermediates are capped by the root's lifetime and chained.
	if !regionalCA.NotAfter.Equal(rootCert.NotAfter) || !leafCA.NotAfter.Equal(rootCert.NotAfter) {
		t.Errorf("intermediate NotAfter = %v, %v; want capped at the root's %v", regionalCA.NotAfter, leafCA.NotAfter, rootCert.NotAfter)
	}
	if diff := cmp.Diff([]*x509.Certificate{regionalCA}, regionalChain); diff != "" {
		t.Errorf("regional chain (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]*x509.Certificate{leafCA, regionalCA}, leafChain); diff != "" {
		t.Errorf("leaf tier chain (-want +got):\n%s", diff)
	}

	// Roots flow down: every tier's bundle holds the root only.
	for name, e := range map[string]*env{"regional": regional, "leaf": leafTier} {
		if diff := cmp.Diff([][]byte{rootCert.Raw}, e.bundles.rootsDER(t, td)); diff != "" {
			t.Errorf("%s bundle roots (-want +got):\n%s", name, diff)
		}
	}

	// An SVID of the lowest tier carries its intermediates and verifies
	// against the root tier's bundle.
	id := spiffeid.RequireFromPath(td, "/edge/workload")
	key := mustKey(t, ca.KeyTypeECP256)
	certs, err := leafTier.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: id, PublicKey: key.Public(), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatalf("SignX509SVID on the leaf tier: %v", err)
	}
	if len(certs) != 3 {
		t.Errorf("leaf-tier SVID chain has %d certificates, want leaf, leaf-tier CA, regional CA", len(certs))
	}
	if !certs[0].NotAfter.Equal(rootCert.NotAfter) {
		t.Errorf("SVID NotAfter = %v, want capped at the chain's %v", certs[0].NotAfter, rootCert.NotAfter)
	}
	if got, _, err := x509svid.Verify(certs, rootTier.bundles.x509Bundle(t, td), x509svid.WithTime(start)); err != nil || got != id {
		t.Errorf("x509svid.Verify against the root bundle = %v, %v", got, err)
	}
	srv, err := leafTier.m.ServerCertificate(nil)
	if err != nil || len(srv.Certificate) != 3 {
		t.Fatalf("leaf-tier server certificate: %d certificates, %v; want 3", len(srv.Certificate), err)
	}

	// JWT keys flow up: the regional tier published its key to the root,
	// and took the root's keys into its own bundle.
	regionalKID := regional.m.Status().JWTKey.KeyID
	rootKID := rootTier.m.Status().JWTKey.KeyID
	if len(regionalUp.published) != 1 || regionalUp.published[0].KeyID != regionalKID {
		t.Errorf("regional published %v, want its key %q", regionalUp.published, regionalKID)
	}
	if kids := rootTier.bundles.kids(t, td); !slices.Contains(kids, regionalKID) {
		t.Errorf("root bundle JWT keys %v lack the regional key %q", kids, regionalKID)
	}
	if kids := regional.bundles.kids(t, td); !slices.Contains(kids, rootKID) || !slices.Contains(kids, regionalKID) {
		t.Errorf("regional bundle JWT keys %v lack the root key %q or its own %q", kids, rootKID, regionalKID)
	}
	token, _, _, err := regional.m.SignJWTSVID(context.Background(), id, []string{"api"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(token, rootTier.bundles.jwtBundle(t, td), []string{"api"}); err != nil {
		t.Errorf("regional JWT-SVID does not validate against the root bundle: %v", err)
	}
}
