package downstream

// The parent end of nesting: what a tier does with its children's requests
// for an intermediate CA. Who may ask is the API's downstream rule (the
// caller's X509-SVID belongs to an entry with downstream = true); the rest is
// here, as the policies the server injects into the API and the CA manager.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
)

// ErrChildRequest is wrapped by every refusal of ChildCAPolicy; the API
// answers it with InvalidArgument.
var ErrChildRequest = errors.New("downstream: child CA request refused")

// ChildCAPolicy returns the parent's rule for a child's CA request: every
// URI SAN of the CSR must be spiffe://<td> (the child is a tier of the same
// trust domain), a child asking for no TTL (preferred zero) gets
// min(defaultTTL, maxTTL), and one asking for more than maxTTL (this tier's
// own CA lifetime: a child CA must fit inside its parent's) is refused. A
// zero maxTTL sets no limit beyond the cap at the signing CA's expiry, which
// the CA manager applies in any case.
func ChildCAPolicy(td spiffeid.TrustDomain, defaultTTL, maxTTL time.Duration) func(csr *x509.CertificateRequest, preferred time.Duration) (time.Duration, error) {
	return func(csr *x509.CertificateRequest, preferred time.Duration) (time.Duration, error) {
		if preferred < 0 {
			return 0, fmt.Errorf("%w: preferred TTL %v is negative", ErrChildRequest, preferred)
		}
		for _, u := range csr.URIs {
			id, err := spiffeid.FromURI(u)
			if err != nil || id.TrustDomain() != td {
				return 0, fmt.Errorf("%w: CSR URI SAN %q is not the trust domain spiffe://%s", ErrChildRequest, u, td.Name())
			}
		}
		ttl := defaultTTL
		if maxTTL > 0 && ttl > maxTTL {
			ttl = maxTTL // a child asking for nothing gets at most what it may ask for
		}
		if preferred > 0 {
			ttl = preferred
		}
		if maxTTL > 0 && ttl > maxTTL {
			return 0, fmt.Errorf("%w: preferred TTL %s is longer than this tier's own CA lifetime %s; a child CA must fit inside its parent's",
				ErrChildRequest, ttl, maxTTL)
		}
		return ttl, nil
	}
}

// ChooseSigningCA picks which of a parent's CAs signs a child's CA for ttl
// at now: the active one, unless it would cut the child short (it ends
// before now+ttl) and the prepared one has begun, ends later and chains to
// no root the active one does not. The prepared CA is then already trusted
// everywhere the active one is, so a child gets a full-length CA even in the
// parent's last sixth; a new root, by contrast, must have propagated before
// anything chains to it, which the activation schedule guarantees and an
// early use would not. prepared may be nil.
func ChooseSigningCA(now time.Time, ttl time.Duration, active, prepared *upstream.MintedCA) *upstream.MintedCA {
	if prepared == nil {
		return active
	}
	activeEnd, preparedEnd := active.NotAfter(), prepared.NotAfter()
	if !activeEnd.Before(now.Add(ttl)) || !preparedEnd.After(activeEnd) ||
		now.Before(prepared.Cert.NotBefore) || !sameAnchors(prepared, active) {
		return active
	}
	return prepared
}

// sameAnchors reports whether every root a chains to is one b chains to.
func sameAnchors(a, b *upstream.MintedCA) bool {
	aa, ba := a.Anchors(), b.Anchors()
	if len(aa) == 0 {
		return false
	}
	for _, r := range aa {
		if !slices.ContainsFunc(ba, r.Equal) {
			return false
		}
	}
	return true
}
