package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
)

// jwtKey identifies a cached JWT-SVID: the entry and its sorted audience.
type jwtKey struct {
	entryID  string
	audience string // sorted, joined with NUL
}

type jwtToken struct {
	token           string
	issued, expires time.Time
}

// jwtCache holds minted JWT-SVIDs until half their lifetime.
type jwtCache struct {
	mu sync.Mutex
	m  map[jwtKey]jwtToken
}

func newJWTCache() *jwtCache { return &jwtCache{m: map[jwtKey]jwtToken{}} }

func makeJWTKey(entryID string, audience []string) jwtKey {
	aud := slices.Clone(audience)
	slices.Sort(aud)
	aud = slices.Compact(aud)
	return jwtKey{entryID: entryID, audience: strings.Join(aud, "\x00")}
}

// prune drops expired tokens and tokens of entries no longer authorized.
func (c *jwtCache) prune(now time.Time, keep func(entryID string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range c.m {
		if !now.Before(t.expires) || !keep(k.entryID) {
			delete(c.m, k)
		}
	}
}

// fetchJWT returns a JWT-SVID for the entry and audience: the cached one
// while it is younger than half its lifetime, else a new one from the
// server; when the server cannot be reached a cached token that has not
// expired is still returned.
func (a *Agent) fetchJWT(ctx context.Context, e *entryInfo, audience []string) (string, error) {
	key := makeJWTKey(e.id, audience)
	now := a.now()
	a.jwts.mu.Lock()
	cached, ok := a.jwts.m[key]
	a.jwts.mu.Unlock()
	if ok && now.Before(cached.issued.Add(cached.expires.Sub(cached.issued)/2)) {
		return cached.token, nil
	}
	c := a.conns.load()
	if c == nil {
		return "", errors.New("agent: not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := svidv1.NewSVIDClient(c.cc).NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: e.id, Audience: audience})
	if err != nil {
		if ok && now.Before(cached.expires) {
			return cached.token, nil
		}
		return "", classify(err)
	}
	if resp.Svid == nil || resp.Svid.Token == "" {
		return "", errors.New("agent: server returned no JWT-SVID")
	}
	t := jwtToken{token: resp.Svid.Token, issued: time.Unix(resp.Svid.IssuedAt, 0), expires: time.Unix(resp.Svid.ExpiresAt, 0)}
	if resp.Svid.IssuedAt == 0 {
		t.issued = now
	}
	a.jwts.mu.Lock()
	a.jwts.m[key] = t
	a.jwts.mu.Unlock()
	a.metrics.jwtMinted.Inc()
	return t.token, nil
}
