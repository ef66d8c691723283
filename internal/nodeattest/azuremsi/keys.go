package azuremsi

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
)

// How the signing keys of a tenant are kept.
const (
	// keyRefresh is how long fetched keys are used before they are fetched
	// again (SPIRE's keySetRefreshInterval).
	keyRefresh = time.Hour
	// unknownKeyRefetch is the least time between two fetches that a token
	// with a kid not in the set causes: Entra ID publishes a new key before
	// signing with it, so a refetch finds a rotated key, and a stream of
	// tokens with made-up kids costs one fetch per interval, not one each.
	unknownKeyRefetch = 5 * time.Minute
	// failedFetchRetry is the least time between fetches after one failed.
	failedFetchRetry = 10 * time.Second
	// keyMaxAge is how long keys are used while refreshing them fails.
	keyMaxAge = 24 * time.Hour
	// maxKeys bounds the key set (Entra ID publishes about 5).
	maxKeys = 100
)

// errUnknownKey is the refusal of a token whose kid the tenant does not
// publish (after a refetch, when one is allowed).
var errUnknownKey = errors.New("unknown key ID")

// tenantKeys are one tenant's token signing keys and v2.0 issuer, from its
// OpenID discovery document and the key set it points to. They are fetched
// on first use and cached: attestations do not fetch.
type tenantKeys struct {
	tenantID     string
	discoveryURL string
	client       *http.Client
	timeout      time.Duration
	now          func() time.Time

	mu        sync.Mutex
	keys      map[string]*rsa.PublicKey // nil until a fetch succeeds
	issuer    string                    // the discovery document's, for this tenant
	fetchedAt time.Time                 // last successful fetch
	triedAt   time.Time                 // last fetch started
	lastErr   error
	inflight  chan struct{} // closed when the running fetch ends
	fetches   int           // key set fetches, for tests
}

func newTenantKeys(tenantID, loginEndpoint string, client *http.Client, timeout time.Duration, now func() time.Time) *tenantKeys {
	return &tenantKeys{
		tenantID:     tenantID,
		discoveryURL: loginEndpoint + tenantID + "/v2.0/.well-known/openid-configuration",
		client:       client,
		timeout:      timeout,
		now:          now,
	}
}

// key returns the key with ID kid and the tenant's v2.0 issuer. A kid the
// set does not hold is errUnknownKey wrapped in nodeattest.ErrDenied; keys
// that cannot be fetched are an internal error.
func (t *tenantKeys) key(ctx context.Context, kid string) (*rsa.PublicKey, string, error) {
	// Three rounds at most: wait for a fetch someone else started, run one,
	// answer from what it left.
	for range 3 {
		t.mu.Lock()
		now := t.now()
		k, known := t.keys[kid]
		fresh := t.keys != nil && now.Sub(t.fetchedAt) < keyRefresh
		if known && fresh {
			issuer := t.issuer
			t.mu.Unlock()
			return k, issuer, nil
		}
		if ch := t.inflight; ch != nil {
			t.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, "", ctx.Err()
			}
		}
		var fetch bool
		switch {
		case t.triedAt.IsZero():
			fetch = true
		case !fresh:
			fetch = now.Sub(t.triedAt) >= failedFetchRetry
		default: // fresh, but kid unknown
			fetch = now.Sub(t.triedAt) >= unknownKeyRefetch
		}
		if fetch {
			ch := make(chan struct{})
			t.inflight, t.triedAt = ch, now
			t.mu.Unlock()
			// The fetch serves every waiting attestation, so it runs to its
			// own deadline rather than to this caller's.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.timeout)
			keys, issuer, err := t.fetch(fctx)
			cancel()
			t.mu.Lock()
			if err == nil {
				t.keys, t.issuer, t.fetchedAt, t.lastErr = keys, issuer, t.now(), nil
			} else {
				t.lastErr = err
			}
			t.inflight = nil
			close(ch)
			t.mu.Unlock()
			continue
		}
		usable := t.keys != nil && now.Sub(t.fetchedAt) < keyMaxAge
		issuer, lastErr := t.issuer, t.lastErr
		t.mu.Unlock()
		if !usable {
			return nil, "", fmt.Errorf("azuremsi: no signing keys for tenant %s: %w", t.tenantID, lastErr)
		}
		if !known {
			return nil, "", fmt.Errorf("azuremsi: %w: token kid %q: %w of tenant %s", nodeattest.ErrDenied, kid, errUnknownKey, t.tenantID)
		}
		return k, issuer, nil
	}
	return nil, "", fmt.Errorf("azuremsi: signing keys for tenant %s: fetch did not settle", t.tenantID)
}

// fetched returns how many times the key set was fetched.
func (t *tenantKeys) fetched() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fetches
}

// discoveryDocument holds the fields of an OpenID provider configuration
// that attestation reads.
type discoveryDocument struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

func (t *tenantKeys) fetch(ctx context.Context) (map[string]*rsa.PublicKey, string, error) {
	var doc discoveryDocument
	if err := t.getJSON(ctx, t.discoveryURL, "OpenID configuration", &doc); err != nil {
		return nil, "", err
	}
	// The tenant's own document names it in its issuer; the multi-tenant
	// ones ("common", "organizations") carry a {tenantid} placeholder.
	issuer := strings.ReplaceAll(doc.Issuer, "{tenantid}", t.tenantID)
	if u, err := url.Parse(issuer); err != nil || u.Scheme != "https" || !strings.Contains(u.Path, "/"+t.tenantID+"/") {
		return nil, "", fmt.Errorf("azuremsi: OpenID configuration of tenant %s names issuer %q, not one of the tenant", t.tenantID, doc.Issuer)
	}
	if u, err := url.Parse(doc.JWKSURI); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, "", fmt.Errorf("azuremsi: OpenID configuration of tenant %s has jwks_uri %q, not an https URL", t.tenantID, doc.JWKSURI)
	}
	var set jwkSet
	t.mu.Lock()
	t.fetches++
	t.mu.Unlock()
	if err := t.getJSON(ctx, doc.JWKSURI, "signing keys", &set); err != nil {
		return nil, "", err
	}
	keys, err := set.rsaKeys()
	if err != nil {
		return nil, "", fmt.Errorf("azuremsi: signing keys of tenant %s: %w", t.tenantID, err)
	}
	return keys, issuer, nil
}

func (t *tenantKeys) getJSON(ctx context.Context, u, what string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("azuremsi: %s of tenant %s: %w", what, t.tenantID, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("azuremsi: fetching %s of tenant %s: %w", what, t.tenantID, err)
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, what)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("azuremsi: fetching %s of tenant %s: %s answered %s", what, t.tenantID, req.URL.Redacted(), resp.Status)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("azuremsi: decoding %s of tenant %s: %w", what, t.tenantID, err)
	}
	return nil
}

// jwkSet is a JSON Web Key Set as Entra ID publishes it. Only the RSA
// public key itself (n, e) is read: the x5c certificates beside it are
// neither trusted nor needed, so there is no second copy of a key to check
// one way and use another.
type jwkSet struct {
	Keys []struct {
		Kty string `json:"kty"`
		Use string `json:"use"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		N   string `json:"n"`
		E   string `json:"e"`
	} `json:"keys"`
}

// rsaKeys returns the set's RSA signing keys by kid. Keys for other uses
// or algorithms are skipped; a kid that names two different keys is left
// out, so that a token is never verified with a key chosen among several.
func (s jwkSet) rsaKeys() (map[string]*rsa.PublicKey, error) {
	if len(s.Keys) > maxKeys {
		return nil, fmt.Errorf("%d keys, at most %d allowed", len(s.Keys), maxKeys)
	}
	keys := map[string]*rsa.PublicKey{}
	ambiguous := map[string]bool{}
	for _, k := range s.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != "RS256") || k.Kid == "" {
			continue
		}
		pub, err := rsaPublicKey(k.N, k.E)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Kid, err)
		}
		if prev, ok := keys[k.Kid]; ok && !prev.Equal(pub) {
			ambiguous[k.Kid] = true
		}
		keys[k.Kid] = pub
	}
	for kid := range ambiguous {
		delete(keys, kid)
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA signing key")
	}
	return keys, nil
}

func rsaPublicKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(n, "="))
	if err != nil {
		return nil, fmt.Errorf("decoding n: %v", err)
	}
	eb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(e, "="))
	if err != nil {
		return nil, fmt.Errorf("decoding e: %v", err)
	}
	mod := new(big.Int).SetBytes(nb)
	if bits := mod.BitLen(); bits < 2048 || bits > 8192 {
		return nil, fmt.Errorf("%d-bit modulus, want 2048 to 8192 bits", bits)
	}
	if len(eb) == 0 || len(eb) > 4 {
		return nil, fmt.Errorf("exponent of %d bytes", len(eb))
	}
	exp := int(new(big.Int).SetBytes(eb).Int64())
	if exp < 3 || exp%2 == 0 {
		return nil, fmt.Errorf("exponent %d", exp)
	}
	return &rsa.PublicKey{N: mod, E: exp}, nil
}
