package gcpiit

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
)

// Bounds of the signing keys: Google's are RSA-2048.
const (
	maxKeysResponse = 1 << 20
	minKeyBits      = 2048
	maxKeyBits      = 8192
	// maxKeysAge caps how long a fetched key set is kept, whatever its
	// answer's max-age says.
	maxKeysAge = 24 * time.Hour
	// defaultKeysAge is how long a key set is kept when its answer gives
	// neither max-age nor Expires.
	defaultKeysAge = time.Hour
)

// keyCache holds Google's signing keys, fetched from url. The keys are kept
// until the expiry their answer gives; a kid not among them fetches them
// again, but no fetch, successful or not, starts within interval of the
// previous one, and concurrent callers share one fetch: a burst of agents
// with tokens of a new (or made-up) kid costs Google one request.
type keyCache struct {
	url      string
	client   *http.Client
	interval time.Duration
	timeout  time.Duration
	now      func() time.Time

	mu        sync.Mutex
	keys      map[string]*rsa.PublicKey // nil until a fetch succeeds
	expires   time.Time
	lastFetch time.Time     // start of the last fetch; zero before the first
	lastErr   error         // error of the last fetch, nil if it succeeded
	inflight  chan struct{} // closed when the running fetch ends; nil when none runs
}

func newKeyCache(url string, client *http.Client, interval, timeout time.Duration, now func() time.Time) *keyCache {
	return &keyCache{url: url, client: client, interval: interval, timeout: timeout, now: now}
}

// key returns the key with ID kid, fetching the key set when it has
// expired or lacks kid and no fetch was made within the interval. It is a
// keyFunc.
func (c *keyCache) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	for {
		c.mu.Lock()
		if c.inflight != nil {
			wait := c.inflight
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("gcpiit: waiting for Google's signing keys: %w", ctx.Err())
			}
		}
		now := c.now()
		recent := !c.lastFetch.IsZero() && now.Sub(c.lastFetch) < c.interval
		fresh := c.keys != nil && now.Before(c.expires)
		if k, ok := c.keys[kid]; ok && fresh {
			c.mu.Unlock()
			return k, nil
		}
		if recent {
			// An expired set is not used even when it cannot be
			// refreshed: Google may have withdrawn a key from it.
			lastErr := c.lastErr
			c.mu.Unlock()
			if lastErr != nil {
				return nil, fmt.Errorf("gcpiit: Google's signing keys: %w", lastErr)
			}
			return nil, fmt.Errorf("gcpiit: %w: token kid %q is not one of Google's signing keys", nodeattest.ErrDenied, kid)
		}
		done := make(chan struct{})
		c.inflight = done
		c.lastFetch = now
		c.mu.Unlock()

		// The fetch serves every waiting caller, so the first caller's
		// cancellation must not fail it for the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		keys, maxAge, err := c.fetch(fctx)
		cancel()

		c.mu.Lock()
		c.lastErr = err
		if err == nil {
			c.keys = keys
			c.expires = now.Add(min(max(maxAge, c.interval), maxKeysAge))
		}
		c.inflight = nil
		close(done)
		c.mu.Unlock()
	}
}

// fetch gets and parses the key set, and returns how long it may be kept.
func (c *keyCache) fetch(ctx context.Context) (map[string]*rsa.PublicKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("%s answered %s", c.url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", c.url, err)
	}
	keys, err := parseKeys(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", c.url, err)
	}
	return keys, cacheAge(resp.Header, c.now()), nil
}

// cacheAge is how long an answer with header h may be kept: its
// Cache-Control max-age, else the time to its Expires, else defaultKeysAge.
// no-cache and no-store mean zero (the caller's interval still applies).
func cacheAge(h http.Header, now time.Time) time.Duration {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if d == "no-cache" || d == "no-store" {
				return 0
			}
			if s, ok := strings.CutPrefix(d, "max-age="); ok {
				if n, err := strconv.ParseInt(strings.Trim(s, `"`), 10, 64); err == nil && n >= 0 {
					return time.Duration(min(n, int64(maxKeysAge/time.Second))) * time.Second
				}
			}
		}
	}
	if e := h.Get("Expires"); e != "" {
		if t, err := http.ParseTime(e); err == nil {
			return max(t.Sub(now), 0)
		}
		return 0
	}
	return defaultKeysAge
}

// jwk is one entry of a JSON Web Key Set, the members an RSA signing key
// has.
type jwk struct {
	KeyType   string `json:"kty"`
	Algorithm string `json:"alg"`
	Use       string `json:"use"`
	KeyID     string `json:"kid"`
	N         string `json:"n"`
	E         string `json:"e"`
}

// parseKeys parses Google's signing keys in either format Google serves:
// a JSON Web Key Set ({"keys":[...]}, oauth2/v3/certs) or an object of key
// ID to PEM certificate (oauth2/v1/certs, which SPIRE reads). Keys that are
// not RSA signing keys for RS256 are skipped; a malformed RSA key, a
// repeated key ID or a set without a usable key is an error.
func parseKeys(body []byte) (map[string]*rsa.PublicKey, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding signing keys: %v", err)
	}
	keys := map[string]*rsa.PublicKey{}
	put := func(kid string, k *rsa.PublicKey) error {
		if kid == "" {
			return errors.New("a signing key has no key ID")
		}
		if _, dup := keys[kid]; dup {
			return fmt.Errorf("key ID %q appears twice", kid)
		}
		if err := checkKey(k); err != nil {
			return fmt.Errorf("key %q: %v", kid, err)
		}
		keys[kid] = k
		return nil
	}
	if set, ok := doc["keys"]; ok && len(set) > 0 && set[0] == '[' {
		var jwks []jwk
		if err := json.Unmarshal(set, &jwks); err != nil {
			return nil, fmt.Errorf("decoding JSON Web Key Set: %v", err)
		}
		for _, j := range jwks {
			if j.KeyType != "RSA" || (j.Use != "" && j.Use != "sig") || (j.Algorithm != "" && j.Algorithm != "RS256") {
				continue
			}
			k, err := rsaKey(j.N, j.E)
			if err != nil {
				return nil, fmt.Errorf("key %q: %v", j.KeyID, err)
			}
			if err := put(j.KeyID, k); err != nil {
				return nil, err
			}
		}
	} else {
		for kid, v := range doc {
			var pemText string
			if err := json.Unmarshal(v, &pemText); err != nil {
				return nil, fmt.Errorf("key %q is not a PEM string", kid)
			}
			block, rest := pem.Decode([]byte(pemText))
			if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
				return nil, fmt.Errorf("key %q is not one PEM certificate", kid)
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("key %q: %v", kid, err)
			}
			k, ok := cert.PublicKey.(*rsa.PublicKey)
			if !ok {
				continue
			}
			if err := put(kid, k); err != nil {
				return nil, err
			}
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA signing key")
	}
	return keys, nil
}

// rsaKey decodes a JWK's base64url modulus and exponent.
func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil || len(nb) == 0 || nb[0] == 0 {
		return nil, errors.New("modulus is not unpadded base64url of a minimal big-endian integer")
	}
	eb, err := base64.RawURLEncoding.DecodeString(e)
	if err != nil || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
		return nil, errors.New("exponent is not unpadded base64url of a minimal integer of at most 4 bytes")
	}
	var exp int
	for _, b := range eb {
		exp = exp<<8 | int(b)
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: exp}, nil
}

// checkKey bounds the work a key makes a verification do.
func checkKey(k *rsa.PublicKey) error {
	bits := k.N.BitLen()
	switch {
	case bits < minKeyBits || bits > maxKeyBits:
		return fmt.Errorf("RSA modulus of %d bits, want %d to %d", bits, minKeyBits, maxKeyBits)
	case k.E < 3 || k.E%2 == 0 || k.E > 1<<31-1:
		return fmt.Errorf("RSA exponent %d is not an odd number from 3 to 2^31-1", k.E)
	}
	return nil
}
