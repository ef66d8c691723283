// Package upstreamtest holds what the upstream adapters' tests share: test
// certificate authorities that sign (optionally defective) intermediates, an
// in-memory bundle store, a settable clock, a scenario that runs a real CA
// manager over an adapter and breaks the upstream under it, and Tier, real
// in-process arbor servers to build root/regional/leaf trees over an adapter
// (TreeChainsToRoot). BenchmarkColdStart compares the adapters' cold starts
// side by side. Test code only.
package upstreamtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/upstream"
)

// Clock is a settable clock for Now fields.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Epoch is the fixed start time of the tests' clocks.
var Epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// CA is a test certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is Cert followed by its issuers up to and including the root.
	Chain []*x509.Certificate
}

// NewRoot returns a self-signed root CA valid from now-1h to now+life.
func NewRoot(t testing.TB, name string, now time.Time, life time.Duration) *CA {
	t.Helper()
	return NewRootWithKey(t, name, now, life, NewKey(t))
}

// NewRootWithKey is NewRoot with a given key.
func NewRootWithKey(t testing.TB, name string, now time.Time, life time.Duration, key crypto.Signer) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"upstreamtest"}, CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(life),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	c := create(t, tmpl, tmpl, key.Public(), key)
	return &CA{Cert: c, Key: key, Chain: []*x509.Certificate{c}}
}

// NewIntermediate returns a CA signed by parent valid until now+life.
func (p *CA) NewIntermediate(t testing.TB, name string, now time.Time, life time.Duration) *CA {
	t.Helper()
	key := NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"upstreamtest"}, CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(life),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	c := create(t, tmpl, p.Cert, key.Public(), p.Key)
	return &CA{Cert: c, Key: key, Chain: append([]*x509.Certificate{c}, p.Chain...)}
}

// Defect makes SignCA produce a certificate an adapter must refuse.
type Defect int

// Defects.
const (
	Good         Defect = iota
	NotCA               // no CA basic constraints
	ShortLife           // a quarter of the requested lifetime
	WrongTD             // URI SAN spiffe://wrong.example
	ForeignChain        // signed by a CA that the returned chain does not lead to
)

// SignCA signs an intermediate CA certificate for pub the way an external
// authority would (honouring the requested ttl and the CSR's URI SANs),
// applying defect. With ForeignChain it is signed by a throwaway CA while the
// caller still returns p's chain.
func (p *CA) SignCA(t testing.TB, pub crypto.PublicKey, subject pkix.Name, uris []*url.URL, now time.Time, ttl time.Duration, defect Defect) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               subject,
		NotBefore:             now.Add(-30 * time.Second),
		NotAfter:              now.Add(ttl),
		URIs:                  uris,
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	parent, key := p.Cert, p.Key
	switch defect {
	case NotCA:
		tmpl.IsCA = false
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	case ShortLife:
		tmpl.NotAfter = now.Add(ttl / 4)
	case WrongTD:
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: "wrong.example"}}
	case ForeignChain:
		other := NewRoot(t, "foreign", now, 10*ttl)
		parent, key = other.Cert, other.Key
	}
	if tmpl.NotAfter.After(p.Cert.NotAfter) {
		tmpl.NotAfter = p.Cert.NotAfter
	}
	return create(t, tmpl, parent, pub, key)
}

// NewKey returns a new P-256 key.
func NewKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CertsPEM encodes certificates as PEM.
func CertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as PKCS#8 PEM.
func KeyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFile writes data to path with mode 0600.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// MemBundles is an in-memory datastore.BundleStore.
type MemBundles struct {
	mu      sync.Mutex
	bundles map[spiffeid.TrustDomain]*datastore.Bundle
}

var _ datastore.BundleStore = (*MemBundles)(nil)

// NewMemBundles returns an empty store.
func NewMemBundles() *MemBundles {
	return &MemBundles{bundles: map[spiffeid.TrustDomain]*datastore.Bundle{}}
}

func clone(b *datastore.Bundle) *datastore.Bundle {
	if b == nil {
		return nil
	}
	c := *b
	c.X509Authorities = append([]datastore.X509Authority(nil), b.X509Authorities...)
	c.JWTAuthorities = append([]datastore.JWTAuthority(nil), b.JWTAuthorities...)
	return &c
}

// FetchBundle implements datastore.BundleStore.
func (s *MemBundles) FetchBundle(_ context.Context, td spiffeid.TrustDomain) (*datastore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bundles[td]
	if !ok {
		return nil, datastore.ErrNotFound
	}
	return clone(b), nil
}

// ListBundles implements datastore.BundleStore.
func (s *MemBundles) ListBundles(context.Context) ([]*datastore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*datastore.Bundle
	for _, b := range s.bundles {
		out = append(out, clone(b))
	}
	return out, nil
}

// UpdateBundle implements datastore.BundleStore.
func (s *MemBundles) UpdateBundle(_ context.Context, td spiffeid.TrustDomain, fn func(*datastore.Bundle) (*datastore.Bundle, error)) (*datastore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := clone(s.bundles[td])
	out, err := fn(in)
	if err != nil {
		return nil, err
	}
	if out != in {
		s.bundles[td] = clone(out)
	}
	return clone(s.bundles[td]), nil
}

// DeleteBundle implements datastore.BundleStore.
func (s *MemBundles) DeleteBundle(_ context.Context, td spiffeid.TrustDomain) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.bundles[td]; !ok {
		return datastore.ErrNotFound
	}
	delete(s.bundles, td)
	return nil
}

// Scenario runs a real ca.Manager over an upstream adapter.
type Scenario struct {
	TrustDomain spiffeid.TrustDomain
	Upstream    upstream.Authority
	Clock       *Clock
	// CATTL requested from the upstream; zero means 1h.
	CATTL time.Duration
	// Root is the external root the tier's SVIDs must chain to.
	Root *x509.Certificate
	// Break makes the upstream fail (unreachable, or returning a bad CA).
	Break func()
	// WantErr, if set, is what the failed rotation's error must match.
	WantErr error
}

// KeepsCurrentCA initializes the manager (the upstream must work), checks an
// SVID chains to the external root and the root is in the bundle, then breaks
// the upstream, moves past the CA's half-life so the manager asks for a new
// CA, and checks that Rotate fails while the current CA keeps signing SVIDs
// that chain to the root.
func (s Scenario) KeepsCurrentCA(t *testing.T) {
	t.Helper()
	ttl := s.CATTL
	if ttl == 0 {
		ttl = time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bundles := NewMemBundles()
	m, err := ca.New(ca.Config{TrustDomain: s.TrustDomain, Upstream: s.Upstream, Bundles: bundles, CATTL: ttl, Now: s.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(ctx); err != nil {
		t.Fatalf("Init: %v", err)
	}
	b, err := bundles.FetchBundle(ctx, s.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range b.X509Authorities {
		found = found || string(a.Cert) == string(s.Root.Raw)
	}
	if !found {
		t.Errorf("bundle lacks the external root %q", s.Root.Subject)
	}
	first := m.Status().X509CA
	s.checkSVID(ctx, t, m, "before the upstream broke")

	s.Break()
	s.Clock.Add(ttl/2 + time.Minute)
	err = m.Rotate(ctx)
	if err == nil {
		t.Fatal("Rotate with a broken upstream succeeded, want an error")
	}
	if s.WantErr != nil && !errors.Is(err, s.WantErr) {
		t.Errorf("Rotate error = %v, want %v", err, s.WantErr)
	}
	st := m.Status()
	if st.X509CA == nil || !st.X509CA.Equal(first) {
		t.Errorf("active CA changed after a failed rotation")
	}
	if st.NextX509CA != nil {
		t.Errorf("a CA was prepared from a broken upstream: %v", st.NextX509CA.Subject)
	}
	s.checkSVID(ctx, t, m, "after the upstream broke")
}

func (s Scenario) checkSVID(ctx context.Context, t *testing.T, m *ca.Manager, when string) {
	t.Helper()
	id := spiffeid.RequireFromPath(s.TrustDomain, "/workload")
	key := NewKey(t)
	chain, err := m.SignX509SVID(ctx, ca.X509SVIDParams{ID: id, PublicKey: key.Public(), TTL: 5 * time.Minute})
	if err != nil {
		t.Fatalf("%s: SignX509SVID: %v", when, err)
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: s.Clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	opts.Roots.AddCert(s.Root)
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		t.Errorf("%s: SVID does not chain to the external root: %v", when, err)
	}
}
