package gcpiit_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// attestAll runs n attestations of payload at once and returns their
// errors.
func attestAll(t *testing.T, a *gcpiit.Attestor, payload []byte, n int) []error {
	t.Helper()
	ctx := testContext(t)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = a.Attest(ctx, payload, noChallenge)
		})
	}
	wg.Wait()
	return errs
}

// TestKeyCache: the keys are fetched once for many attestations, serial
// and concurrent, and again only when their max-age has passed.
func TestKeyCache(t *testing.T) {
	f := newFixture(t)
	clk := newClock(now)
	f.google.SetNow(clk.Now)
	f.google.SetMaxAge(10 * time.Minute)
	a := f.attestor(t, func(c *gcpiit.Config) { c.Now = clk.Now })
	tok := token(t, f.signer, testInstance())
	ctx := testContext(t)
	for range 20 {
		if _, err := a.Attest(ctx, tok, noChallenge); err != nil {
			t.Fatal(err)
		}
	}
	for _, err := range attestAll(t, a, tok, 200) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.google.KeyFetches(); n != 1 {
		t.Errorf("key fetches = %d for 220 attestations, want 1", n)
	}
	clk.Advance(9 * time.Minute)
	if _, err := a.Attest(ctx, tok, noChallenge); err != nil || f.google.KeyFetches() != 1 {
		t.Errorf("Attest() within max-age = %v with %d fetches, want success with 1", err, f.google.KeyFetches())
	}
	clk.Advance(2 * time.Minute)
	if _, err := a.Attest(ctx, tok, noChallenge); err != nil || f.google.KeyFetches() != 2 {
		t.Errorf("Attest() past max-age = %v with %d fetches, want success with 2", err, f.google.KeyFetches())
	}
}

// TestKeyCacheUnknownKid: a burst of 1,000 tokens with a kid Google does
// not publish costs one fetch, all are refused as ErrDenied, and no
// further fetch happens until the refresh interval has passed; then one
// does, and a key Google has meanwhile published (a rotation) is found.
func TestKeyCacheUnknownKid(t *testing.T) {
	f := newFixture(t)
	clk := newClock(now)
	a := f.attestor(t, func(c *gcpiit.Config) { c.Now = clk.Now; c.KeysRefreshInterval = time.Minute })
	ctx := testContext(t)
	if _, err := a.Attest(ctx, token(t, f.signer, testInstance()), noChallenge); err != nil {
		t.Fatal(err)
	}
	rotated := loadSigner(t, "other-signer.pem", otherKey)
	newTok := token(t, rotated, testInstance())
	// Within the interval of the first fetch an unknown kid fetches
	// nothing; after it, the burst refetches once.
	if _, err := a.Attest(ctx, newTok, noChallenge); !errors.Is(err, nodeattest.ErrDenied) || f.google.KeyFetches() != 1 {
		t.Errorf("Attest(unknown kid right after the first fetch) = %v with %d fetches, want ErrDenied with 1", err, f.google.KeyFetches())
	}
	clk.Advance(2 * time.Minute)
	for _, err := range attestAll(t, a, newTok, 1000) {
		if !errors.Is(err, nodeattest.ErrDenied) {
			t.Fatalf("Attest(unknown kid) = %v, want ErrDenied", err)
		}
	}
	if n := f.google.KeyFetches(); n != 2 {
		t.Errorf("key fetches = %d after 1,000 tokens with an unknown kid, want 2 (the first and one refetch)", n)
	}

	// Google publishes the key; within the interval it is not fetched.
	f.google.SetSigners(f.signer, rotated)
	clk.Advance(30 * time.Second)
	if _, err := a.Attest(ctx, newTok, noChallenge); !errors.Is(err, nodeattest.ErrDenied) || f.google.KeyFetches() != 2 {
		t.Errorf("Attest(new kid within the interval) = %v with %d fetches, want ErrDenied with 2", err, f.google.KeyFetches())
	}
	clk.Advance(31 * time.Second)
	for _, err := range attestAll(t, a, newTok, 100) {
		if err != nil {
			t.Fatalf("Attest(new kid after the interval) = %v", err)
		}
	}
	if n := f.google.KeyFetches(); n != 3 {
		t.Errorf("key fetches = %d, want 3", n)
	}
	// The old key is still published and still cached.
	if _, err := a.Attest(ctx, token(t, f.signer, testInstance()), noChallenge); err != nil || f.google.KeyFetches() != 3 {
		t.Errorf("Attest(old kid) = %v with %d fetches, want success with 3", err, f.google.KeyFetches())
	}
}

// TestKeyCacheRetiredKey: a key Google no longer publishes stops
// verifying once the set is refreshed.
func TestKeyCacheRetiredKey(t *testing.T) {
	f := newFixture(t)
	clk := newClock(now)
	f.google.SetNow(clk.Now)
	f.google.SetMaxAge(5 * time.Minute)
	a := f.attestor(t, func(c *gcpiit.Config) { c.Now = clk.Now })
	tok := token(t, f.signer, testInstance())
	ctx := testContext(t)
	if _, err := a.Attest(ctx, tok, noChallenge); err != nil {
		t.Fatal(err)
	}
	f.google.SetSigners(loadSigner(t, "other-signer.pem", otherKey))
	clk.Advance(6 * time.Minute)
	if _, err := a.Attest(ctx, tok, noChallenge); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("Attest(retired kid) = %v, want ErrDenied", err)
	}
}

// TestKeyCacheV1Certificates: the keys may come as Google's v1 PEM
// certificates, the format SPIRE fetches.
func TestKeyCacheV1Certificates(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, func(c *gcpiit.Config) { c.KeysURL = f.google.CertsV1URL() })
	if _, err := a.Attest(testContext(t), token(t, f.signer, testInstance()), noChallenge); err != nil {
		t.Errorf("Attest() with v1 certificates = %v", err)
	}
}

// TestKeyCacheUnavailable: keys that cannot be fetched fail attestation
// with an internal error (not a verdict on the token), a failing endpoint
// is asked at most once per interval, and an expired set is not used
// while it cannot be refreshed.
func TestKeyCacheUnavailable(t *testing.T) {
	var fetches atomic.Int32
	var failing atomic.Bool
	f := newFixture(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if failing.Load() {
			http.Error(w, "backend error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "max-age=120")
		resp, err := f.google.Client().Get(f.google.KeysURL())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}))
	defer srv.Close()
	clk := newClock(now)
	a := f.attestor(t, func(c *gcpiit.Config) { c.KeysURL, c.HTTPClient, c.Now = srv.URL, srv.Client(), clk.Now })
	tok := token(t, f.signer, testInstance())
	ctx := testContext(t)
	if _, err := a.Attest(ctx, tok, noChallenge); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	clk.Advance(3 * time.Minute)
	for _, err := range attestAll(t, a, tok, 50) {
		if err == nil || errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) {
			t.Fatalf("Attest() with the keys unavailable = %v, want an internal error", err)
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2: one refresh for 50 attestations", n)
	}
	failing.Store(false)
	clk.Advance(time.Minute)
	if _, err := a.Attest(ctx, tok, noChallenge); err != nil {
		t.Errorf("Attest() once the keys are back = %v", err)
	}
}

// TestKeyCacheRedirect: the keys URL's redirects are not followed.
func TestKeyCacheRedirect(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewTLSServer(http.RedirectHandler(f.google.KeysURL(), http.StatusFound))
	defer srv.Close()
	a := f.attestor(t, func(c *gcpiit.Config) { c.KeysURL, c.HTTPClient = srv.URL, srv.Client() })
	if _, err := a.Attest(testContext(t), token(t, f.signer, testInstance()), noChallenge); err == nil {
		t.Error("Attest() succeeded with keys behind a redirect")
	}
	if n := f.google.KeyFetches(); n != 0 {
		t.Errorf("the redirect was followed: %d key fetches", n)
	}
}

// TestKeyCacheMalformed: key sets that must not be used.
func TestKeyCacheMalformed(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ name, body string }{
		{"not JSON", "<html>"},
		{"empty set", `{"keys":[]}`},
		{"only non-RSA keys", `{"keys":[{"kty":"EC","kid":"` + keyID + `","crv":"P-256","x":"AA","y":"AA"}]}`},
		{"short modulus", `{"keys":[{"kty":"RSA","kid":"` + keyID + `","n":"AQAB","e":"AQAB"}]}`},
		{"PEM not a certificate", `{"` + keyID + `":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}`},
		{"oversized", `{"keys":[` + string(make([]byte, 2<<20)) + `]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(tc.body)) }))
			defer srv.Close()
			a := f.attestor(t, func(c *gcpiit.Config) { c.KeysURL, c.HTTPClient = srv.URL, srv.Client() })
			_, err := a.Attest(testContext(t), token(t, f.signer, testInstance()), noChallenge)
			if err == nil || errors.Is(err, nodeattest.ErrInvalid) {
				t.Errorf("Attest() = %v, want an internal error", err)
			}
		})
	}
}
