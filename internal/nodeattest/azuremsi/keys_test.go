package azuremsi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
)

// fetches returns the key sets Entra ID served, after checking each came
// with its discovery document.
func fetches(t *testing.T, e *azuremsitest.Entra) int {
	t.Helper()
	d, k := e.Fetches()
	if d != k {
		t.Errorf("Entra ID served %d discovery documents for %d key sets, want one each", d, k)
	}
	return k
}

// TestKeyCache: the tenant's keys are fetched by the first attestation and
// then kept: 1,000 attestations fetch once; 1,000 tokens with a kid the
// set lacks fetch once more when the last fetch is older than the
// refetch interval and not at all before; the keys are refreshed after an
// hour.
func TestKeyCache(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, nil)
	ctx := testContext(t)
	good := f.payload(t, testClaims())
	unknown := payloadOf(t, sign(t, loadKey(t, "not-published", "other-signer.pem"), testClaims()))

	for i := range 1000 {
		if _, err := a.Attest(ctx, good, noChallenge); err != nil {
			t.Fatalf("Attest() #%d = %v", i, err)
		}
	}
	if n := fetches(t, f.entra); n != 1 {
		t.Fatalf("1,000 attestations fetched the keys %d times, want 1", n)
	}
	if n := a.KeyFetches(tenantID); n != 1 {
		t.Errorf("attestor counts %d fetches, want 1", n)
	}

	// Within 5 minutes of the fetch an unknown kid is refused at once.
	f.clock.Add(4 * time.Minute)
	for range 1000 {
		if _, err := a.Attest(ctx, unknown, noChallenge); !errors.Is(err, nodeattest.ErrDenied) {
			t.Fatalf("Attest(unknown kid) = %v, want ErrDenied", err)
		}
	}
	if n := fetches(t, f.entra); n != 1 {
		t.Errorf("1,000 unknown kids within the refetch interval fetched %d times in all, want 1", n)
	}
	// Past it, the first refetches and the rest wait for the next interval.
	f.clock.Add(2 * time.Minute)
	for range 1000 {
		if _, err := a.Attest(ctx, unknown, noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "unknown key ID") {
			t.Fatalf("Attest(unknown kid) = %v, want ErrDenied: unknown key ID", err)
		}
	}
	if n := fetches(t, f.entra); n != 2 {
		t.Errorf("1,000 unknown kids past the refetch interval fetched %d times in all, want 2", n)
	}
	// Good tokens never refetch; after an hour the set is refreshed once.
	for range 100 {
		if _, _, err := a.VerifyPayload(ctx, good); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Add(time.Hour)
	for range 100 {
		if _, _, err := a.VerifyPayload(ctx, f.payload(t, claimsAt(f.clock.Now()))); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches(t, f.entra); n != 3 {
		t.Errorf("after an hour the keys were fetched %d times in all, want 3", n)
	}
}

// claimsAt is testClaims issued at now.
func claimsAt(now time.Time) azuremsitest.Claims {
	c := testClaims()
	c.IssuedAt = now
	return c
}

// TestKeyRotation: Entra ID publishes a new key before signing with it. A
// token with the new kid arriving within the refetch interval of the last
// fetch is refused; the first after it fetches the new set and attests,
// and tokens with the retired key are refused once it is gone.
func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, nil)
	ctx := testContext(t)
	if _, _, err := a.VerifyPayload(ctx, f.payload(t, testClaims())); err != nil {
		t.Fatal(err)
	}
	next := loadKey(t, "next-key", "other-signer.pem")
	f.entra.SetCommonKeys(next)
	newToken := payloadOf(t, sign(t, next, claimsAt(f.clock.Now())))
	if _, _, err := a.VerifyPayload(ctx, newToken); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("VerifyPayload(new kid, just after a fetch) = %v, want ErrDenied", err)
	}
	f.clock.Add(5 * time.Minute)
	if _, principal, err := a.VerifyPayload(ctx, newToken); err != nil || principal != principalID {
		t.Errorf("VerifyPayload(new kid, past the refetch interval) = %q, %v; want %s", principal, err, principalID)
	}
	if _, _, err := a.VerifyPayload(ctx, f.payload(t, claimsAt(f.clock.Now()))); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("VerifyPayload(retired key) = %v, want ErrDenied", err)
	}
}

// TestKeyCacheConcurrentFirstUse: a burst of first attestations waits for
// one fetch.
func TestKeyCacheConcurrentFirstUse(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, nil)
	ctx := testContext(t)
	p := f.payload(t, testClaims())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			if _, _, err := a.VerifyPayload(ctx, p); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := fetches(t, f.entra); n != 1 {
		t.Errorf("64 concurrent first attestations fetched %d times, want 1", n)
	}
}

// TestKeyFetchFailures: keys that cannot be fetched or do not hold the
// tenant's are an internal error (neither ErrInvalid nor ErrDenied, so the
// cause stays on the server), retried no more than every 10 seconds; keys
// fetched before are used while a refresh fails. No redirect is followed.
func TestKeyFetchFailures(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var answer func(w http.ResponseWriter, r *http.Request)
	var followed bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed = true }))
	defer target.Close()
	discovery := func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"issuer":"https://login.example/` + tenantID + `/v2.0","jwks_uri":"https://` + r.Host + `/keys"}`))
	}
	// good is Entra ID answering with the fixture's key.
	good := func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/keys") {
			json.NewEncoder(w).Encode(map[string]any{"keys": []any{f.key.JWK("")}})
			return
		}
		discovery(w, r)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := answer
		mu.Unlock()
		if h == nil {
			h = good
		}
		h(w, r)
	}))
	defer srv.Close()
	set := func(h func(w http.ResponseWriter, r *http.Request)) {
		mu.Lock()
		defer mu.Unlock()
		answer = h
	}

	a := f.attestor(t, func(c *azuremsi.Config) {
		c.LoginEndpoint = srv.URL
		c.HTTPClient = azuremsitest.Client(f.arm, fakeServer{srv})
	})
	ctx := testContext(t)
	internal := func(what string, want string) {
		t.Helper()
		_, _, err := a.VerifyPayload(ctx, f.payload(t, claimsAt(f.clock.Now())))
		if err == nil || errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: VerifyPayload() = %v, want an internal error about %q", what, err, want)
		}
	}

	for _, tc := range []struct {
		name string
		h    func(w http.ResponseWriter, r *http.Request)
		want string
	}{
		{"outage", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }, "503"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target.URL, http.StatusFound) }, "redirect"},
		{"oversized document", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(strings.Repeat(" ", 2<<20))) }, "size limit"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, "decoding"},
		{"issuer of another tenant", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"issuer":"https://login.example/` + otherTenantID + `/v2.0","jwks_uri":"https://` + r.Host + `/keys"}`))
		}, "issuer"},
		{"no jwks_uri", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"issuer":"https://login.example/` + tenantID + `/v2.0"}`))
		}, "jwks_uri"},
		{"jwks_uri over http", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"issuer":"https://login.example/` + tenantID + `/v2.0","jwks_uri":"http://` + r.Host + `/keys"}`))
		}, "jwks_uri"},
		{"no RSA key", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/keys") {
				w.Write([]byte(`{"keys":[{"kty":"EC","kid":"x","crv":"P-256"}]}`))
				return
			}
			discovery(w, r)
		}, "no RSA signing key"},
		{"1024-bit key", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/keys") {
				w.Write([]byte(`{"keys":[{"kty":"RSA","kid":"small","n":"` + strings.Repeat("A", 170) + `","e":"AQAB"}]}`))
				return
			}
			discovery(w, r)
		}, "modulus"},
	} {
		set(tc.h)
		f.clock.Add(11 * time.Second)
		internal(tc.name, tc.want)
	}
	if followed {
		t.Error("a redirect was followed")
	}

	// A failed fetch is not retried for 10 seconds.
	set(nil)
	internal("retry held back", "no signing keys")
	f.clock.Add(10 * time.Second)
	if _, _, err := a.VerifyPayload(ctx, f.payload(t, claimsAt(f.clock.Now()))); err != nil {
		t.Fatalf("VerifyPayload() once Entra ID answers again = %v", err)
	}
	// Stale keys serve while the refresh fails, up to a day.
	set(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	f.clock.Add(2 * time.Hour)
	if _, _, err := a.VerifyPayload(ctx, f.payload(t, claimsAt(f.clock.Now()))); err != nil {
		t.Errorf("VerifyPayload() with stale keys and Entra ID down = %v, want the stale keys used", err)
	}
	f.clock.Add(23 * time.Hour)
	internal("keys a day old", "503")
}

// fakeServer lets an httptest server be trusted with azuremsitest.Client.
type fakeServer struct{ *httptest.Server }

func (s fakeServer) URL() string { return s.Server.URL }

// TestJWKSAmbiguousKeyID: a key set naming two keys with one kid is not a
// choice to make: the kid is left out, and its tokens are refused whichever
// of the two signed them.
func TestJWKSAmbiguousKeyID(t *testing.T) {
	f := newFixture(t)
	twin := loadKey(t, keyID, "other-signer.pem")
	third := loadKey(t, "third-key", "other-signer.pem")
	f.entra.SetCommonKeys(twin, f.key, third)
	a := f.attestor(t, nil)
	ctx := testContext(t)
	for _, k := range []*azuremsitest.Key{f.key, twin} {
		if _, _, err := a.VerifyPayload(ctx, payloadOf(t, sign(t, k, testClaims()))); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "unknown key ID") {
			t.Errorf("VerifyPayload(kid published twice) = %v, want ErrDenied: unknown key ID", err)
		}
	}
	if _, _, err := a.VerifyPayload(ctx, payloadOf(t, sign(t, third, testClaims()))); err != nil {
		t.Errorf("VerifyPayload(the set's other key) = %v", err)
	}
}
