// Package upstream connects a root tier to a PKI that already exists: each
// subpackage is an adapter that implements ca.Upstream by having an external
// authority sign the tier's CA certificate — disk (a CA certificate and key in
// files), vault (HashiCorp Vault's PKI engine) and awspca (AWS Private CA).
// The spire kind is the downstream package pointed at any SPIRE-API server.
//
// Every adapter checks what its authority returned with Validate before
// handing it to the CA manager, so that an upstream that returns a chain that
// does not verify, a certificate that is not a CA, one for another key or
// trust domain, or a lifetime much shorter than asked is refused with a clear
// error. The CA manager then keeps issuing from its current CA and asks again
// at its next rotation tick; an unreachable upstream is handled the same way.
package upstream

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/x509util"
)

// Reasons a minted CA is refused; a *RefusedError wraps one of them (and
// ca.ErrBadUpstream). Callers branch with errors.Is.
var (
	ErrNoCertificate    = errors.New("no CA certificate")
	ErrNoRoots          = errors.New("no roots to trust")
	ErrKeyMismatch      = errors.New("certificate is not for the requested key")
	ErrNotCA            = errors.New("certificate lacks CA basic constraints")
	ErrNoKeyCertSign    = errors.New("certificate lacks the keyCertSign key usage")
	ErrWrongTrustDomain = errors.New("certificate names another trust domain")
	ErrChainInvalid     = errors.New("certificate does not chain to the roots")
	ErrLifetimeTooShort = errors.New("certificate lifetime is too short")
)

// MinLifetimeFraction is the smallest fraction of the requested lifetime an
// upstream may grant. Authorities cap lifetimes (a Vault mount's max TTL, the
// expiry of the signing CA itself), so some shortening is normal and only
// logged; below this fraction the CA manager would have to rotate so often
// that the configuration is almost certainly wrong, so the CA is refused.
const MinLifetimeFraction = 0.5

// RefusedError reports a CA certificate from an upstream that Validate
// refused. It unwraps to its Reason and to ca.ErrBadUpstream.
type RefusedError struct {
	// Cert is the refused certificate; nil when there was none.
	Cert *x509.Certificate
	// Reason is one of the Err* sentinels of this package.
	Reason error
	// Detail says what exactly was wrong.
	Detail string
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	b.WriteString("upstream: refused CA certificate")
	if e.Cert != nil {
		fmt.Fprintf(&b, " (serial %v, subject %q)", e.Cert.SerialNumber, e.Cert.Subject.String())
	}
	b.WriteString(": ")
	b.WriteString(e.Reason.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns the reason and ca.ErrBadUpstream.
func (e *RefusedError) Unwrap() []error { return []error{e.Reason, ca.ErrBadUpstream} }

// Validate checks a CA minted by an upstream for key's public key in trust
// domain td, asked for requestedTTL at now. It refuses (with a *RefusedError)
// a missing certificate or roots, a certificate for another key, without CA
// basic constraints or keyCertSign, with a spiffe:// URI SAN other than
// spiffe://<td>, that does not chain through Intermediates to one of Roots at
// now, or whose remaining lifetime (the earliest NotAfter of the certificate
// and its intermediates, minus now) is less than MinLifetimeFraction of
// requestedTTL. It returns that remaining lifetime.
func Validate(minted *ca.MintedCA, key crypto.PublicKey, td spiffeid.TrustDomain, requestedTTL time.Duration, now time.Time) (time.Duration, error) {
	if minted == nil || minted.Cert == nil {
		return 0, &RefusedError{Reason: ErrNoCertificate}
	}
	c := minted.Cert
	refuse := func(reason error, format string, args ...any) (time.Duration, error) {
		return 0, &RefusedError{Cert: c, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if !x509util.PublicKeyEqual(key, c.PublicKey) {
		return refuse(ErrKeyMismatch, "the upstream signed a different public key")
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return refuse(ErrNotCA, "basic constraints valid=%v, CA=%v", c.BasicConstraintsValid, c.IsCA)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return refuse(ErrNoKeyCertSign, "key usage is %#x", int(c.KeyUsage))
	}
	want := x509util.TrustDomainURI(td).String()
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") && u.String() != want {
			return refuse(ErrWrongTrustDomain, "URI SAN %q, want %q", u.String(), want)
		}
	}
	if len(minted.Roots) == 0 {
		return refuse(ErrNoRoots, "the upstream returned no trust anchors")
	}
	at := now
	if at.Before(c.NotBefore) { // an upstream clock slightly ahead of ours
		at = c.NotBefore
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, r := range minted.Roots {
		opts.Roots.AddCert(r)
	}
	for _, ic := range minted.Intermediates {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := c.Verify(opts); err != nil {
		return refuse(ErrChainInvalid, "%v", err)
	}
	left := x509util.MinNotAfter(append([]*x509.Certificate{c}, minted.Intermediates...)...).Sub(now)
	if requestedTTL > 0 && float64(left) < MinLifetimeFraction*float64(requestedTTL) {
		return refuse(ErrLifetimeTooShort, "%v left, asked for %v (at least %v%% required)", left.Round(time.Second), requestedTTL, int(MinLifetimeFraction*100))
	}
	return left, nil
}

// LogMinted logs a CA that Validate accepted: at info level, or at warn level
// when the upstream granted noticeably less than asked (more than 5% less)
// or when the CA has a path length of zero (it can then sign SVIDs but not
// the intermediate CAs of downstream tiers).
func LogMinted(log *slog.Logger, kind string, minted *ca.MintedCA, requestedTTL, granted time.Duration) {
	if log == nil {
		return
	}
	c := minted.Cert
	attrs := []any{"upstream", kind, "x509_ca_serial", c.SerialNumber.String(), "not_after", c.NotAfter, "requested_ttl", requestedTTL, "granted_ttl", granted.Round(time.Second)}
	if c.MaxPathLen == 0 && c.MaxPathLenZero {
		log.Warn("upstream: CA has path length 0; downstream tiers' intermediates under it will not verify", attrs...)
	}
	if requestedTTL > 0 && granted < requestedTTL-requestedTTL/20 {
		log.Warn("upstream: CA lifetime shorter than requested", attrs...)
		return
	}
	log.Info("upstream: CA signed", attrs...)
}

// SplitChain sorts the certificates an authority returned above a CA
// certificate: self-signed ones become roots and the others intermediates,
// in order. When anchorTop is true and there is no self-signed certificate,
// the last certificate becomes the (partial-chain) root, for authorities whose
// published chain stops below an offline root.
func SplitChain(chain []*x509.Certificate, anchorTop bool) (intermediates, roots []*x509.Certificate) {
	for _, c := range chain {
		if x509util.IsSelfSigned(c) {
			roots = appendUnique(roots, c)
		} else {
			intermediates = appendUnique(intermediates, c)
		}
	}
	if anchorTop && len(roots) == 0 && len(intermediates) > 0 {
		last := intermediates[len(intermediates)-1]
		intermediates, roots = intermediates[:len(intermediates)-1], []*x509.Certificate{last}
	}
	return intermediates, roots
}

// AppendUnique appends the certificates of add that certs does not hold yet.
func AppendUnique(certs []*x509.Certificate, add ...*x509.Certificate) []*x509.Certificate {
	return appendUnique(certs, add...)
}

func appendUnique(certs []*x509.Certificate, add ...*x509.Certificate) []*x509.Certificate {
next:
	for _, a := range add {
		for _, c := range certs {
			if c.Equal(a) {
				continue next
			}
		}
		certs = append(certs, a)
	}
	return certs
}

// ParseCertificatesPEM parses every CERTIFICATE block of data, in order. It
// fails on a malformed certificate and when there is none; other block types
// are skipped.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("upstream: parse certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("upstream: no PEM CERTIFICATE block")
	}
	return out, nil
}

// ReadCertificatesFile reads the PEM certificates of a file.
func ReadCertificatesFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%w in %s", err, path)
	}
	return certs, nil
}
