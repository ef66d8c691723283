package agent

// Tainted authorities: the server marks an X.509 authority or JWT key of its
// bundle tainted when an operator (or its parent) retires it early. The
// agent then re-mints, ahead of their half-life, every X509-SVID whose chain
// verifies to a tainted X.509 authority and its own SVID likewise, and drops
// the cached JWT-SVIDs a tainted key signed, as spire-agent does.

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// taintedOf returns the tainted X.509 authorities and JWT key IDs of a
// bundle as the server sent it.
func taintedOf(b *types.Bundle, roots []*x509.Certificate) ([]*x509.Certificate, map[string]bool) {
	var x []*x509.Certificate
	for i, a := range b.X509Authorities {
		if a.Tainted && i < len(roots) {
			x = append(x, roots[i])
		}
	}
	var j map[string]bool
	for _, k := range b.JwtAuthorities {
		if k.Tainted {
			if j == nil {
				j = map[string]bool{}
			}
			j[k.KeyId] = true
		}
	}
	return x, j
}

// signedByTainted reports whether the chain (leaf first) verifies to one of
// the tainted authorities, or contains one.
func signedByTainted(chain []*x509.Certificate, tainted []*x509.Certificate) bool {
	if len(chain) == 0 || len(tainted) == 0 {
		return false
	}
	roots := x509.NewCertPool()
	for _, t := range tainted {
		roots.AddCert(t)
		for _, c := range chain {
			if bytes.Equal(c.Raw, t.Raw) {
				return true
			}
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	// Validity is not the question here, only who signed: verify at a time
	// inside the leaf's lifetime.
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: chain[0].NotBefore,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// taintCheck remembers which cached SVIDs were checked against which
// tainted set, so that a sync parses each SVID's chain once per change of
// the bundle rather than at every sync.
type taintCheck struct {
	mu      sync.Mutex
	against *bundleView
	result  map[*x509SVID]bool
}

// tainted reports whether s chains to a tainted authority of b.
func (tc *taintCheck) tainted(s *x509SVID, b *bundleView) bool {
	if b == nil || len(b.tainted) == 0 {
		return false
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.against != b {
		tc.against, tc.result = b, map[*x509SVID]bool{}
	}
	if r, ok := tc.result[s]; ok {
		return r
	}
	chain, err := x509.ParseCertificates(s.chainDER)
	r := err == nil && signedByTainted(chain, b.tainted)
	tc.result[s] = r
	return r
}

// dropTainted removes the cached JWT-SVIDs signed by a tainted key, so the
// next fetch mints one with the active key; it returns how many it dropped.
func (c *jwtCache) dropTainted(kids map[string]bool) int {
	if len(kids) == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, t := range c.m {
		if kids[jwtKeyID(t.token)] {
			delete(c.m, k)
			n++
		}
	}
	return n
}

// jwtKeyID is the kid of a compact JWT's header, or "".
func jwtKeyID(token string) string {
	head, _, ok := strings.Cut(token, ".")
	if !ok {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		KID string `json:"kid"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return ""
	}
	return h.KID
}

// checkTainted is the sync's look at the bundle's tainted authorities: it
// drops JWT-SVIDs of tainted keys and marks the agent's own SVID for
// renewal at the next step when it chains to a tainted authority.
func (a *Agent) checkTainted(b *bundleView) {
	if b == nil {
		return
	}
	if n := a.jwts.dropTainted(b.taintedJWT); n > 0 {
		a.log.Info("dropped JWT-SVIDs signed by a tainted key", "count", n)
	}
	if len(b.tainted) == 0 || a.selfTainted.Load() {
		return
	}
	if st := a.node.Load(); st != nil && signedByTainted(st.SVID.Certificates, b.tainted) {
		a.selfTainted.Store(true)
		a.log.Info("the agent SVID chains to a tainted authority; renewing it now", "spiffe_id", a.SPIFFEID().String())
	}
}
