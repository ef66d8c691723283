package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/upstream"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    ca.KeyType
		wantErr bool
	}{
		{"ec-p256", ca.KeyTypeECP256, false},
		{"ec-p384", ca.KeyTypeECP384, false},
		{"rsa-2048", ca.KeyTypeRSA2048, false},
		{"rsa-4096", ca.KeyTypeRSA4096, false},
		{"", 0, true},
		{"EC-P256", 0, true},
		{"ed25519", 0, true},
	}
	for _, tt := range tests {
		got, err := ca.ParseKeyType(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseKeyType(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ca.ErrUnknownKeyType) {
			t.Errorf("ParseKeyType(%q) error %v is not ErrUnknownKeyType", tt.in, err)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("ParseKeyType(%q).String() = %q", tt.in, got.String())
		}
	}
	var zero ca.KeyType
	if zero != ca.KeyTypeECP256 {
		t.Errorf("zero KeyType = %v, want ec-p256", zero)
	}
}

func TestKeyTypeGenerate(t *testing.T) {
	tests := []struct {
		kt    ca.KeyType
		check func(crypto.PublicKey) bool
	}{
		{ca.KeyTypeECP256, func(p crypto.PublicKey) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P256() }},
		{ca.KeyTypeECP384, func(p crypto.PublicKey) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P384() }},
		{ca.KeyTypeRSA2048, func(p crypto.PublicKey) bool { k, ok := p.(*rsa.PublicKey); return ok && k.N.BitLen() == 2048 }},
		{ca.KeyTypeRSA4096, func(p crypto.PublicKey) bool { k, ok := p.(*rsa.PublicKey); return ok && k.N.BitLen() == 4096 }},
	}
	for _, tt := range tests {
		t.Run(tt.kt.String(), func(t *testing.T) {
			k, err := tt.kt.Generate(rand.Reader)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if !tt.check(k.Public()) {
				t.Errorf("Generate() made a %T, not a %v key", k.Public(), tt.kt)
			}
		})
	}
	if _, err := ca.KeyType(99).Generate(rand.Reader); !errors.Is(err, ca.ErrUnknownKeyType) {
		t.Errorf("KeyType(99).Generate() error = %v, want ErrUnknownKeyType", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name string
		edit func(*ca.Config)
	}{
		{"no trust domain", func(c *ca.Config) { c.TrustDomain = spiffeid.TrustDomain{} }},
		{"no upstream", func(c *ca.Config) { c.Upstream = nil }},
		{"no bundles", func(c *ca.Config) { c.Bundles = nil }},
		{"bad key type", func(c *ca.Config) { c.KeyType = 7 }},
		{"bad jwt key type", func(c *ca.Config) { c.JWTKeyType = -1 }},
		{"negative ttl", func(c *ca.Config) { c.X509SVIDTTL = -time.Second }},
	}
	for _, tt := range tests {
		cfg := e.cfg
		tt.edit(&cfg)
		if _, err := ca.New(cfg); err == nil {
			t.Errorf("%s: New() succeeded, want an error", tt.name)
		}
	}
}

func mustKey(t testing.TB, kt ca.KeyType) crypto.Signer {
	t.Helper()
	k, err := kt.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignX509SVIDConforms(t *testing.T) {
	ctx := context.Background()
	for _, caType := range []ca.KeyType{ca.KeyTypeECP256, ca.KeyTypeECP384, ca.KeyTypeRSA2048} {
		t.Run("ca-"+caType.String(), func(t *testing.T) {
			e := newEnv(t, func(c *ca.Config) { c.KeyType = caType })
			caCert, chain := e.m.X509CA()
			if len(chain) != 0 {
				t.Errorf("X509CA() chain has %d certificates, want none for a self-signed CA", len(chain))
			}
			for _, leafType := range []ca.KeyType{ca.KeyTypeECP256, ca.KeyTypeRSA2048} {
				key := mustKey(t, leafType)
				id := spiffeid.RequireFromPath(td, "/workload/"+leafType.String())
				now := e.clock.Now()
				certs, err := e.m.SignX509SVID(ctx, ca.X509SVIDParams{
					ID: id, PublicKey: key.Public(), TTL: 30 * time.Minute, DNSNames: []string{"w.example.org", "w2"},
				})
				if err != nil {
					t.Fatalf("SignX509SVID(%v key): %v", leafType, err)
				}
				if len(certs) != 1 {
					t.Fatalf("SignX509SVID returned %d certificates, want just the leaf", len(certs))
				}
				leaf := certs[0]

				// go-spiffe's own checks: parse with the key, verify to the
				// bundle in the datastore.
				keyDER, err := x509.MarshalPKCS8PrivateKey(key)
				if err != nil {
					t.Fatal(err)
				}
				svid, err := x509svid.ParseRaw(leaf.Raw, keyDER)
				if err != nil {
					t.Fatalf("x509svid.ParseRaw: %v", err)
				}
				if svid.ID != id {
					t.Errorf("parsed SVID ID = %v, want %v", svid.ID, id)
				}
				gotID, _, err := x509svid.Verify(certs, e.bundles.x509Bundle(t, td), x509svid.WithTime(now))
				if err != nil || gotID != id {
					t.Fatalf("x509svid.Verify = %v, %v; want %v", gotID, err, id)
				}

				checks := []struct {
					what      string
					got, want any
				}{
					{"URI SANs", len(leaf.URIs), 1},
					{"DNS SANs", leaf.DNSNames, []string{"w.example.org", "w2"}},
					{"subject CN", leaf.Subject.CommonName, "w.example.org"},
					{"IsCA", leaf.IsCA, false},
					{"digitalSignature", leaf.KeyUsage&x509.KeyUsageDigitalSignature != 0, true},
					{"certSign|cRLSign", leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0, false},
					{"ExtKeyUsage", leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
					{"NotBefore", leaf.NotBefore, now.Add(-10 * time.Second)},
					{"NotAfter", leaf.NotAfter, now.Add(30 * time.Minute)},
					{"AuthorityKeyId", leaf.AuthorityKeyId, caCert.SubjectKeyId},
					{"serial positive", leaf.SerialNumber.Sign() > 0, true},
					{"serial <= 128 bits", leaf.SerialNumber.BitLen() <= 128, true},
				}
				for _, c := range checks {
					if diff := cmp.Diff(c.want, c.got); diff != "" {
						t.Errorf("%v leaf: %s (-want +got):\n%s", leafType, c.what, diff)
					}
				}
			}
		})
	}
}

func TestSignX509SVIDDefaults(t *testing.T) {
	e := newEnv(t, func(c *ca.Config) { c.X509SVIDTTL = 20 * time.Minute })
	key := mustKey(t, ca.KeyTypeECP256)
	var serials []*big.Int
	for range 3 {
		certs, err := e.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: key.Public()})
		if err != nil {
			t.Fatal(err)
		}
		leaf := certs[0]
		if want := e.clock.Now().Add(20 * time.Minute); !leaf.NotAfter.Equal(want) {
			t.Errorf("NotAfter = %v, want the default TTL %v", leaf.NotAfter, want)
		}
		if len(leaf.Subject.Organization) == 0 {
			t.Errorf("default subject is empty")
		}
		serials = append(serials, leaf.SerialNumber)
	}
	if serials[0].Cmp(serials[1]) == 0 || serials[1].Cmp(serials[2]) == 0 {
		t.Errorf("serials repeat: %v", serials)
	}
}

func TestSignX509SVIDRejects(t *testing.T) {
	e := newEnv(t, nil)
	ecKey := mustKey(t, ca.KeyTypeECP256).Public()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/w")
	tests := []struct {
		name string
		p    ca.X509SVIDParams
	}{
		{"zero id", ca.X509SVIDParams{PublicKey: ecKey}},
		{"foreign trust domain", ca.X509SVIDParams{ID: spiffeid.RequireFromString("spiffe://other.org/w"), PublicKey: ecKey}},
		{"no key", ca.X509SVIDParams{ID: id}},
		{"rsa-1024 key", ca.X509SVIDParams{ID: id, PublicKey: &weak.PublicKey}},
		{"negative ttl", ca.X509SVIDParams{ID: id, PublicKey: ecKey, TTL: -time.Minute}},
		{"empty dns name", ca.X509SVIDParams{ID: id, PublicKey: ecKey, DNSNames: []string{""}}},
	}
	for _, tt := range tests {
		if _, err := e.m.SignX509SVID(context.Background(), tt.p); !errors.Is(err, ca.ErrInvalidArgument) {
			t.Errorf("%s: SignX509SVID error = %v, want ErrInvalidArgument", tt.name, err)
		}
	}

	m, err := ca.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: id, PublicKey: ecKey}); !errors.Is(err, ca.ErrNotInitialized) {
		t.Errorf("SignX509SVID before Init: error = %v, want ErrNotInitialized", err)
	}
	if _, _, _, err := m.SignJWTSVID(context.Background(), id, []string{"a"}, 0); !errors.Is(err, ca.ErrNotInitialized) {
		t.Errorf("SignJWTSVID before Init: error = %v, want ErrNotInitialized", err)
	}
	if err := m.Rotate(context.Background()); !errors.Is(err, ca.ErrNotInitialized) {
		t.Errorf("Rotate before Init: error = %v, want ErrNotInitialized", err)
	}
}

func TestSVIDTTLCappedByCA(t *testing.T) {
	e := newEnv(t, func(c *ca.Config) { c.CATTL = time.Hour })
	caCert, _ := e.m.X509CA()
	key := mustKey(t, ca.KeyTypeECP256).Public()
	id := spiffeid.RequireFromPath(td, "/w")

	tests := []struct {
		at   time.Time
		ttl  time.Duration
		want time.Time
	}{
		{epoch, 10 * time.Minute, epoch.Add(10 * time.Minute)},
		{epoch, 2 * time.Hour, caCert.NotAfter},
		{epoch.Add(50 * time.Minute), time.Hour, caCert.NotAfter},
		{caCert.NotAfter.Add(-time.Second), time.Hour, caCert.NotAfter},
	}
	for _, tt := range tests {
		e.clock.Set(tt.at) // no Rotate: the CA stays the same
		certs, err := e.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: id, PublicKey: key, TTL: tt.ttl})
		if err != nil {
			t.Fatalf("SignX509SVID at %v: %v", tt.at, err)
		}
		if !certs[0].NotAfter.Equal(tt.want) {
			t.Errorf("at %v ttl %v: NotAfter = %v, want %v", tt.at, tt.ttl, certs[0].NotAfter, tt.want)
		}
	}
	e.clock.Set(caCert.NotAfter)
	if _, err := e.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: id, PublicKey: key}); !errors.Is(err, ca.ErrExpired) {
		t.Errorf("SignX509SVID at CA expiry: error = %v, want ErrExpired", err)
	}
}

// verifiesWith reports whether the chain verifies against only the given
// roots at now.
func verifiesWith(chain []*x509.Certificate, now time.Time, roots ...*x509.Certificate) bool {
	_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots), x509svid.WithTime(now))
	return err == nil
}

func TestX509CARotation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	id := spiffeid.RequireFromPath(td, "/w")
	key := mustKey(t, ca.KeyTypeECP256).Public()
	sign := func() []*x509.Certificate {
		t.Helper()
		certs, err := e.m.SignX509SVID(ctx, ca.X509SVIDParams{ID: id, PublicKey: key})
		if err != nil {
			t.Fatalf("SignX509SVID at %v: %v", e.clock.Now(), err)
		}
		return certs
	}
	serverLeaf := func() *x509.Certificate {
		t.Helper()
		c, err := e.m.ServerCertificate(nil)
		if err != nil {
			t.Fatalf("ServerCertificate: %v", err)
		}
		return c.Leaf
	}

	// At 0: A is active and its root is the bundle.
	a, _ := e.m.X509CA()
	if diff := cmp.Diff([][]byte{a.Raw}, e.bundles.rootsDER(t, td)); diff != "" {
		t.Fatalf("bundle roots after Init (-want +got):\n%s", diff)
	}
	if e.m.Status().NextX509CA != nil {
		t.Fatalf("a next CA is prepared right after Init")
	}
	seq := e.bundles.bundle(t, td).SequenceNumber
	writes := e.bundles.Writes()
	srvA := serverLeaf()
	if !verifiesWith([]*x509.Certificate{srvA}, e.clock.Now(), a) {
		t.Fatalf("server certificate does not chain to A")
	}
	if got, want := srvA.URIs[0].String(), "spiffe://example.org/spire/server"; got != want {
		t.Errorf("server certificate ID = %q, want %q", got, want)
	}

	// Just before half-life: nothing happens, nothing is written.
	e.rotateAt(t, halfLife(a).Add(-time.Second))
	if e.m.Status().NextX509CA != nil {
		t.Fatalf("next CA prepared before half-life")
	}
	if got := e.bundles.Writes(); got != writes {
		t.Errorf("bundle written %d times by a rotation step that changed nothing", got-writes)
	}

	// At half-life: B is prepared, its root is in the bundle, A still signs.
	e.rotateAt(t, halfLife(a))
	b := e.m.Status().NextX509CA
	if b == nil {
		t.Fatalf("no next CA at half-life")
	}
	if diff := cmp.Diff([][]byte{a.Raw, b.Raw}, e.bundles.rootsDER(t, td)); diff != "" {
		t.Errorf("bundle roots after prepare (-want +got):\n%s", diff)
	}
	if got := e.bundles.bundle(t, td).SequenceNumber; got <= seq {
		t.Errorf("sequence number %d did not increase from %d when B was published", got, seq)
	}
	if cur, _ := e.m.X509CA(); !cur.Equal(a) {
		t.Errorf("active CA changed at half-life")
	}
	if chain := sign(); !verifiesWith(chain, e.clock.Now(), a) || verifiesWith(chain, e.clock.Now(), b) {
		t.Errorf("SVID at half-life is not signed by A")
	}
	if srv := serverLeaf(); !verifiesWith([]*x509.Certificate{srv}, e.clock.Now(), a) {
		t.Errorf("server certificate at half-life does not chain to A")
	}

	// Just before the last sixth: still A.
	e.rotateAt(t, lastSixth(a).Add(-time.Second))
	if cur, _ := e.m.X509CA(); !cur.Equal(a) {
		t.Errorf("B activated before the last sixth of A's lifetime")
	}

	// At the last sixth: B is active, SVIDs and the server certificate chain to B.
	e.rotateAt(t, lastSixth(a))
	if cur, _ := e.m.X509CA(); !cur.Equal(b) {
		t.Fatalf("B not active at the last sixth of A's lifetime")
	}
	if e.m.Status().NextX509CA != nil {
		t.Errorf("a next CA is still prepared right after activation")
	}
	if chain := sign(); !verifiesWith(chain, e.clock.Now(), b) || verifiesWith(chain, e.clock.Now(), a) {
		t.Errorf("SVID after activation is not signed by B")
	}
	if srv := serverLeaf(); !verifiesWith([]*x509.Certificate{srv}, e.clock.Now(), b) {
		t.Errorf("server certificate not re-issued by B after rotation")
	}
	if diff := cmp.Diff([][]byte{a.Raw, b.Raw}, e.bundles.rootsDER(t, td)); diff != "" {
		t.Errorf("bundle roots after activation (-want +got):\n%s", diff)
	}

	// A expired more than the grace period ago: pruned, B (and its own
	// successor, prepared meanwhile) stay.
	e.rotateAt(t, a.NotAfter.Add(ca.DefaultPruneGrace+time.Second))
	roots := e.bundles.rootsDER(t, td)
	if slices.ContainsFunc(roots, func(d []byte) bool { return bytes.Equal(d, a.Raw) }) {
		t.Errorf("expired root A not pruned")
	}
	if !slices.ContainsFunc(roots, func(d []byte) bool { return bytes.Equal(d, b.Raw) }) {
		t.Errorf("root B pruned")
	}
}

func TestServerCertificateRenewsAtHalfLife(t *testing.T) {
	e := newEnv(t, func(c *ca.Config) {
		c.X509SVIDTTL = 10 * time.Minute
		c.ServerDNSNames = []string{"localhost"}
	})
	first, err := e.m.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"localhost"}, first.Leaf.DNSNames); diff != "" {
		t.Errorf("server DNS names (-want +got):\n%s", diff)
	}
	renewAt := epoch.Add(5 * time.Minute)
	e.clock.Set(renewAt.Add(-time.Second))
	if again, _ := e.m.ServerCertificate(nil); again != first {
		t.Errorf("server certificate re-issued before half-life")
	}
	e.clock.Set(renewAt)
	again, err := e.m.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if again == first || !again.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Errorf("server certificate not renewed at half-life")
	}
	if !upstream.PublicKeyEqual(first.Leaf.PublicKey, again.Leaf.PublicKey) {
		t.Errorf("server key changed on renewal")
	}
}

func TestBadUpstream(t *testing.T) {
	e := newEnv(t, nil)
	other := mustKey(t, ca.KeyTypeECP256)
	tests := []struct {
		name string
		up   upstream.Authority
	}{
		{"cert for another key", upstreamFunc(func(ctx context.Context, _ crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
			return e.cfg.Upstream.MintX509CA(ctx, other, ttl)
		})},
		{"no roots", upstreamFunc(func(ctx context.Context, k crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
			m, err := e.cfg.Upstream.MintX509CA(ctx, k, ttl)
			if err != nil {
				return nil, err
			}
			m.Roots = nil
			return m, nil
		})},
		{"does not chain to roots", upstreamFunc(func(ctx context.Context, k crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
			m, err := e.cfg.Upstream.MintX509CA(ctx, k, ttl)
			if err != nil {
				return nil, err
			}
			a, _ := e.m.X509CA()
			m.Roots = []*x509.Certificate{a}
			return m, nil
		})},
	}
	for _, tt := range tests {
		cfg := e.cfg
		cfg.Upstream = tt.up
		cfg.Bundles = newMemBundles(t)
		m, err := ca.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Init(context.Background()); !errors.Is(err, ca.ErrBadUpstream) {
			t.Errorf("%s: Init error = %v, want ErrBadUpstream", tt.name, err)
		}
	}
}

type upstreamFunc func(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error)

func (f upstreamFunc) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
	return f(ctx, key, ttl)
}

func TestUpstreamOutageKeepsCurrentCA(t *testing.T) {
	failing := false
	e := newEnv(t, func(c *ca.Config) {
		real := c.Upstream
		c.Upstream = upstreamFunc(func(ctx context.Context, k crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
			if failing {
				return nil, errors.New("parent unreachable")
			}
			return real.MintX509CA(ctx, k, ttl)
		})
	})
	a, _ := e.m.X509CA()
	failing = true
	for _, at := range []time.Time{halfLife(a), lastSixth(a)} {
		e.clock.Set(at)
		if err := e.m.Rotate(context.Background()); err == nil {
			t.Errorf("Rotate at %v with a failing upstream succeeded", at)
		}
		if cur, _ := e.m.X509CA(); !cur.Equal(a) {
			t.Fatalf("active CA changed during the upstream outage")
		}
		if _, err := e.m.SignX509SVID(context.Background(), ca.X509SVIDParams{ID: spiffeid.RequireFromPath(td, "/w"), PublicKey: mustKey(t, ca.KeyTypeECP256).Public()}); err != nil {
			t.Errorf("SignX509SVID during the upstream outage: %v", err)
		}
	}
	// Back after the activation point: prepared and its root published at
	// once, activated only after the publish lead (a new root must reach
	// every verifier first) while the active CA is still usable.
	failing = false
	back := lastSixth(a).Add(time.Minute)
	e.rotateAt(t, back)
	if cur, _ := e.m.X509CA(); !cur.Equal(a) {
		t.Fatalf("a new root was activated in the step that prepared it")
	}
	if e.m.Status().NextX509CA == nil {
		t.Fatalf("no CA prepared once the upstream is back")
	}
	e.rotateAt(t, back.Add(2*time.Minute+time.Second))
	b, _ := e.m.X509CA()
	if b.Equal(a) {
		t.Fatalf("no new CA once the upstream is back and the publish lead passed")
	}
	if !slices.ContainsFunc(e.bundles.rootsDER(t, td), func(d []byte) bool { return bytes.Equal(d, b.Raw) }) {
		t.Errorf("new root missing from the bundle")
	}
}
