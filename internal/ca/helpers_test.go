package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/root"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// clock is a pinned, settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// memBundles is an in-memory datastore.BundleStore that counts writes and
// reports an UpdateBundle callback that modifies its input.
type memBundles struct {
	t       testing.TB
	mu      sync.Mutex
	bundles map[spiffeid.TrustDomain]*datastore.Bundle
	writes  int
}

var _ datastore.BundleStore = (*memBundles)(nil)

func newMemBundles(t testing.TB) *memBundles {
	return &memBundles{t: t, bundles: map[spiffeid.TrustDomain]*datastore.Bundle{}}
}

func cloneBundle(b *datastore.Bundle) *datastore.Bundle {
	if b == nil {
		return nil
	}
	c := *b
	c.X509Authorities = append([]datastore.X509Authority(nil), b.X509Authorities...)
	c.JWTAuthorities = append([]datastore.JWTAuthority(nil), b.JWTAuthorities...)
	return &c
}

func (s *memBundles) FetchBundle(_ context.Context, td spiffeid.TrustDomain) (*datastore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bundles[td]
	if !ok {
		return nil, datastore.ErrNotFound
	}
	return cloneBundle(b), nil
}

func (s *memBundles) ListBundles(context.Context) ([]*datastore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*datastore.Bundle
	for _, b := range s.bundles {
		out = append(out, cloneBundle(b))
	}
	return out, nil
}

func (s *memBundles) UpdateBundle(_ context.Context, td spiffeid.TrustDomain, fn func(*datastore.Bundle) (*datastore.Bundle, error)) (*datastore.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := cloneBundle(s.bundles[td])
	orig := cloneBundle(in)
	out, err := fn(in)
	if err != nil {
		return nil, err
	}
	if !sameBundle(orig, in) { // cmp.Diff only on a mismatch: it is slow on DER
		diff := cmp.Diff(orig, in, cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b }))
		s.t.Errorf("UpdateBundle callback modified its input (-before +after):\n%s", diff)
	}
	if out == in {
		return cloneBundle(in), nil
	}
	s.bundles[td] = cloneBundle(out)
	s.writes++
	return cloneBundle(out), nil
}

func sameBundle(a, b *datastore.Bundle) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.TrustDomain != b.TrustDomain || a.SequenceNumber != b.SequenceNumber || a.RefreshHint != b.RefreshHint ||
		len(a.X509Authorities) != len(b.X509Authorities) || len(a.JWTAuthorities) != len(b.JWTAuthorities) {
		return false
	}
	for i := range a.X509Authorities {
		x, y := a.X509Authorities[i], b.X509Authorities[i]
		if !bytes.Equal(x.Cert, y.Cert) || x.Tainted != y.Tainted {
			return false
		}
	}
	for i := range a.JWTAuthorities {
		x, y := a.JWTAuthorities[i], b.JWTAuthorities[i]
		if x.KeyID != y.KeyID || !bytes.Equal(x.PublicKey, y.PublicKey) || x.ExpiresAt != y.ExpiresAt || x.Tainted != y.Tainted {
			return false
		}
	}
	return true
}

func (s *memBundles) DeleteBundle(_ context.Context, td spiffeid.TrustDomain) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.bundles[td]; !ok {
		return datastore.ErrNotFound
	}
	delete(s.bundles, td)
	return nil
}

func (s *memBundles) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// bundle returns td's bundle, failing the test if there is none.
func (s *memBundles) bundle(t testing.TB, td spiffeid.TrustDomain) *datastore.Bundle {
	t.Helper()
	b, err := s.FetchBundle(context.Background(), td)
	if err != nil {
		t.Fatalf("FetchBundle(%v) = %v", td, err)
	}
	return b
}

// x509Bundle builds a go-spiffe X.509 bundle from the stored bundle.
func (s *memBundles) x509Bundle(t testing.TB, td spiffeid.TrustDomain) *x509bundle.Bundle {
	t.Helper()
	b := s.bundle(t, td)
	out := x509bundle.New(td)
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Cert)
		if err != nil {
			t.Fatalf("bundle holds an unparsable certificate: %v", err)
		}
		out.AddX509Authority(c)
	}
	return out
}

// jwtBundle builds a go-spiffe JWT bundle from the stored bundle.
func (s *memBundles) jwtBundle(t testing.TB, td spiffeid.TrustDomain) *jwtbundle.Bundle {
	t.Helper()
	b := s.bundle(t, td)
	out := jwtbundle.New(td)
	for _, a := range b.JWTAuthorities {
		k, err := x509.ParsePKIXPublicKey(a.PublicKey)
		if err != nil {
			t.Fatalf("bundle JWT authority %q: %v", a.KeyID, err)
		}
		if err := out.AddJWTAuthority(a.KeyID, k.(crypto.PublicKey)); err != nil {
			t.Fatalf("AddJWTAuthority(%q): %v", a.KeyID, err)
		}
	}
	return out
}

// rootsDER returns the DER of the stored bundle's X.509 authorities.
func (s *memBundles) rootsDER(t testing.TB, td spiffeid.TrustDomain) [][]byte {
	t.Helper()
	var out [][]byte
	for _, a := range s.bundle(t, td).X509Authorities {
		out = append(out, a.Cert)
	}
	return out
}

func (s *memBundles) kids(t testing.TB, td spiffeid.TrustDomain) []string {
	t.Helper()
	var out []string
	for _, a := range s.bundle(t, td).JWTAuthorities {
		out = append(out, a.KeyID)
	}
	return out
}

// env is a root-tier manager with its clock and bundle store.
type env struct {
	clock   *clock
	bundles *memBundles
	cfg     ca.Config
	m       *ca.Manager
}

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newEnv returns an initialized root-tier manager; edit adjusts its config.
func newEnv(t testing.TB, edit func(*ca.Config)) *env {
	t.Helper()
	return newEnvAt(t, epoch, edit)
}

// newEnvAt is newEnv with the clock starting at start.
func newEnvAt(t testing.TB, start time.Time, edit func(*ca.Config)) *env {
	t.Helper()
	e := &env{clock: newClock(start), bundles: newMemBundles(t)}
	e.cfg = ca.Config{
		TrustDomain:        td,
		Upstream:           &root.SelfSigned{TrustDomain: td, Now: e.clock.Now},
		ChooseDownstreamCA: downstream.ChooseSigningCA,
		Bundles:            e.bundles,
		CATTL:              6 * time.Hour,
		Now:                e.clock.Now,
	}
	if edit != nil {
		edit(&e.cfg)
	}
	e.m = e.start(t)
	return e
}

// start creates a manager from e.cfg and initializes it.
func (e *env) start(t testing.TB) *ca.Manager {
	t.Helper()
	m, err := ca.New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Init(ctx); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return m
}

func (e *env) rotateAt(t testing.TB, at time.Time) {
	t.Helper()
	e.clock.Set(at)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.m.Rotate(ctx); err != nil {
		t.Fatalf("Rotate at %v: %v", at, err)
	}
}

func halfLife(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

func lastSixth(c *x509.Certificate) time.Time {
	return c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 6)
}
