package ca_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/arborid/arbor/internal/ca"
)

// realEpoch pins the clock to the real time at the start of the test:
// jwtsvid.ParseAndValidate checks expiry against time.Now.
func realEpoch() time.Time { return time.Now().Truncate(time.Second) }

func decodeSegment(t *testing.T, token string, i int, v any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("decode segment %d: %v", i, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("unmarshal segment %d: %v", i, err)
	}
}

func TestSignJWTSVID(t *testing.T) {
	tests := []struct {
		kt  ca.KeyType
		alg string
	}{
		{ca.KeyTypeECP256, "ES256"},
		{ca.KeyTypeECP384, "ES384"},
		{ca.KeyTypeRSA2048, "RS256"},
	}
	for _, tt := range tests {
		t.Run(tt.kt.String(), func(t *testing.T) {
			start := realEpoch()
			e := newEnv(t, func(c *ca.Config) {
				c.JWTKeyType = tt.kt
				c.JWTIssuer = "https://oidc.example.org"
				c.Now = func() time.Time { return start }
			})
			id := spiffeid.RequireFromPath(td, "/web")
			token, iat, exp, err := e.m.SignJWTSVID(context.Background(), id, []string{"db"}, 2*time.Minute)
			if err != nil {
				t.Fatalf("SignJWTSVID: %v", err)
			}
			if !iat.Equal(start) || !exp.Equal(start.Add(2*time.Minute)) {
				t.Errorf("iat, exp = %v, %v; want %v, %v", iat, exp, start, start.Add(2*time.Minute))
			}
			svid, err := jwtsvid.ParseAndValidate(token, e.bundles.jwtBundle(t, td), []string{"db"})
			if err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
			}
			if svid.ID != id || !svid.Expiry.Equal(exp) {
				t.Errorf("parsed SVID = %v expiring %v; want %v expiring %v", svid.ID, svid.Expiry, id, exp)
			}
			if _, err := jwtsvid.ParseAndValidate(token, e.bundles.jwtBundle(t, td), []string{"other"}); err == nil {
				t.Errorf("token validated for an audience it was not issued to")
			}

			var header map[string]any
			decodeSegment(t, token, 0, &header)
			wantHeader := map[string]any{"alg": tt.alg, "typ": "JWT", "kid": e.m.Status().JWTKey.KeyID}
			if diff := cmp.Diff(wantHeader, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if kid := header["kid"].(string); len(kid) != 32 {
				t.Errorf("kid %q has %d characters, want 32", kid, len(kid))
			}
			var claims map[string]any
			decodeSegment(t, token, 1, &claims)
			wantClaims := map[string]any{
				"sub": id.String(),
				"aud": []any{"db"}, // an array even for one audience
				"iat": float64(start.Unix()),
				"exp": float64(exp.Unix()),
				"iss": "https://oidc.example.org",
			}
			if diff := cmp.Diff(wantClaims, claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSignJWTSVIDRejects(t *testing.T) {
	e := newEnv(t, nil)
	id := spiffeid.RequireFromPath(td, "/web")
	tests := []struct {
		name string
		id   spiffeid.ID
		aud  []string
		ttl  time.Duration
	}{
		{"no audience", id, nil, 0},
		{"empty audience value", id, []string{"a", ""}, 0},
		{"zero id", spiffeid.ID{}, []string{"a"}, 0},
		{"foreign trust domain", spiffeid.RequireFromString("spiffe://other.org/web"), []string{"a"}, 0},
		{"negative ttl", id, []string{"a"}, -time.Second},
	}
	for _, tt := range tests {
		if _, _, _, err := e.m.SignJWTSVID(context.Background(), tt.id, tt.aud, tt.ttl); !errors.Is(err, ca.ErrInvalidArgument) {
			t.Errorf("%s: SignJWTSVID error = %v, want ErrInvalidArgument", tt.name, err)
		}
	}
}

func TestJWTSVIDDefaultTTLAndCap(t *testing.T) {
	e := newEnv(t, func(c *ca.Config) { c.CATTL = time.Hour; c.JWTSVIDTTL = 3 * time.Minute })
	id := spiffeid.RequireFromPath(td, "/web")
	_, _, exp, err := e.m.SignJWTSVID(context.Background(), id, []string{"a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := epoch.Add(3 * time.Minute); !exp.Equal(want) {
		t.Errorf("default TTL: exp = %v, want %v", exp, want)
	}
	keyEnd := e.m.Status().JWTKey.NotAfter
	e.clock.Set(keyEnd.Add(-time.Minute))
	if _, _, exp, err = e.m.SignJWTSVID(context.Background(), id, []string{"a"}, time.Hour); err != nil || !exp.Equal(keyEnd) {
		t.Errorf("near key expiry: exp = %v, %v; want %v", exp, err, keyEnd)
	}
	e.clock.Set(keyEnd)
	if _, _, _, err := e.m.SignJWTSVID(context.Background(), id, []string{"a"}, 0); !errors.Is(err, ca.ErrExpired) {
		t.Errorf("at key expiry: error = %v, want ErrExpired", err)
	}
}

// tokenKID returns the kid of a token after checking its signature with the
// key of that kid in the bundle.
func tokenKID(t *testing.T, e *env, token string) string {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	kid := tok.Headers[0].KeyID
	key, ok := e.bundles.jwtBundle(t, td).FindJWTAuthority(kid)
	if !ok {
		t.Fatalf("token kid %q not in the bundle", kid)
	}
	var claims jwt.Claims
	if err := tok.Claims(key, &claims); err != nil {
		t.Fatalf("token signature does not verify with bundle key %q: %v", kid, err)
	}
	return kid
}

func TestJWTKeyRotation(t *testing.T) {
	e := newEnv(t, nil)
	id := spiffeid.RequireFromPath(td, "/web")
	sign := func() string {
		t.Helper()
		tok, _, _, err := e.m.SignJWTSVID(context.Background(), id, []string{"a"}, 0)
		if err != nil {
			t.Fatalf("SignJWTSVID at %v: %v", e.clock.Now(), err)
		}
		return tokenKID(t, e, tok)
	}
	k1 := e.m.Status().JWTKey
	if diff := cmp.Diff([]string{k1.KeyID}, e.bundles.kids(t, td)); diff != "" {
		t.Fatalf("bundle JWT keys after Init (-want +got):\n%s", diff)
	}
	if got := e.bundles.bundle(t, td).JWTAuthorities[0].ExpiresAt; got != k1.NotAfter.Unix() {
		t.Errorf("bundle JWT key ExpiresAt = %d, want %d", got, k1.NotAfter.Unix())
	}
	if sign() != k1.KeyID {
		t.Errorf("token not signed by the first key")
	}
	half := k1.NotBefore.Add(k1.NotAfter.Sub(k1.NotBefore) / 2)
	sixth := k1.NotAfter.Add(-k1.NotAfter.Sub(k1.NotBefore) / 6)

	e.rotateAt(t, half.Add(-time.Second))
	if e.m.Status().NextJWTKey != nil {
		t.Errorf("next JWT key prepared before half-life")
	}

	e.rotateAt(t, half)
	k2 := e.m.Status().NextJWTKey
	if k2 == nil {
		t.Fatalf("no next JWT key at half-life")
	}
	if diff := cmp.Diff([]string{k1.KeyID, k2.KeyID}, e.bundles.kids(t, td)); diff != "" {
		t.Errorf("bundle JWT keys after prepare (-want +got):\n%s", diff)
	}
	if sign() != k1.KeyID {
		t.Errorf("token at half-life not signed by the first key")
	}

	e.rotateAt(t, sixth.Add(-time.Second))
	if e.m.Status().JWTKey.KeyID != k1.KeyID {
		t.Errorf("second key activated early")
	}
	e.rotateAt(t, sixth)
	if got := e.m.Status().JWTKey.KeyID; got != k2.KeyID {
		t.Fatalf("active key at the last sixth = %q, want %q", got, k2.KeyID)
	}
	if sign() != k2.KeyID {
		t.Errorf("token after activation not signed by the second key")
	}

	e.rotateAt(t, k1.NotAfter.Add(ca.DefaultPruneGrace+time.Second))
	kids := e.bundles.kids(t, td)
	if slices.Contains(kids, k1.KeyID) || !slices.Contains(kids, k2.KeyID) {
		t.Errorf("bundle JWT keys after pruning = %v; want %q gone and %q kept", kids, k1.KeyID, k2.KeyID)
	}
}
