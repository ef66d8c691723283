package upstream

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrRefused is wrapped by every *RefusedError: a CA source returned a CA
// certificate that cannot be used (the CA manager's ca.ErrBadUpstream is
// this value).
var ErrRefused = errors.New("upstream: refused CA certificate")

// Reasons a CA certificate is refused; a *RefusedError wraps one of them
// (and ErrRefused). Callers branch with errors.Is.
var (
	ErrNoCertificate    = errors.New("no CA certificate")
	ErrNoRoots          = errors.New("no roots to trust")
	ErrKeyMismatch      = errors.New("certificate is not for the requested key")
	ErrNotCA            = errors.New("certificate lacks CA basic constraints")
	ErrNoKeyCertSign    = errors.New("certificate lacks the keyCertSign key usage")
	ErrWrongTrustDomain = errors.New("certificate names another trust domain")
	ErrChainInvalid     = errors.New("certificate does not chain to the roots")
	ErrExpired          = errors.New("certificate chain has expired")
	ErrLifetimeTooShort = errors.New("certificate lifetime is too short")
)

// MinLifetimeFraction is the smallest fraction of the requested lifetime an
// external authority may grant. Authorities cap lifetimes (a Vault mount's
// max TTL, the expiry of the signing CA itself), so some shortening is
// normal and only logged; below this fraction the CA manager would have to
// rotate so often that the configuration is almost certainly wrong, so the
// CA is refused. A parent tier legitimately caps its child at its own
// expiry, so the CA manager does not apply this floor (Validate with a zero
// requested TTL).
const MinLifetimeFraction = 0.5

// RefusedError reports a CA certificate that Validate or CheckCACertificate
// refused. It unwraps to its Reason and to ErrRefused.
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
	b.WriteString(ErrRefused.Error())
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

// Unwrap returns the reason and ErrRefused.
func (e *RefusedError) Unwrap() []error { return []error{e.Reason, ErrRefused} }

// CheckCACertificate checks what makes c a CA certificate of trust domain td
// under RFC 5280 and the SPIFFE X509-SVID specification: valid basic
// constraints with CA true, a key usage extension that asserts keyCertSign
// (RFC 5280 4.2.1.3: a CA that signs certificates must include it, and a key
// usage without keyCertSign forbids signing certificates), and no spiffe://
// URI SAN other than spiffe://<td> (an external PKI's certificate may have
// none). It is the one rule set for every CA certificate a tier signs with,
// whatever its source, and for the CA certificate of the disk adapter.
func CheckCACertificate(c *x509.Certificate, td spiffeid.TrustDomain) error {
	refuse := func(reason error, format string, args ...any) error {
		return &RefusedError{Cert: c, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if c == nil {
		return &RefusedError{Reason: ErrNoCertificate}
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return refuse(ErrNotCA, "basic constraints valid=%v, CA=%v", c.BasicConstraintsValid, c.IsCA)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return refuse(ErrNoKeyCertSign, "key usage is %#x", int(c.KeyUsage))
	}
	want := TrustDomainURI(td).String()
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") && u.String() != want {
			return refuse(ErrWrongTrustDomain, "URI SAN %q, want %q or none", u.String(), want)
		}
	}
	return nil
}

// Validate checks a CA minted for key's public key in trust domain td at
// now, whatever its source: the self-signed root, an external adapter or a
// parent tier. It refuses (with a *RefusedError) a missing certificate or
// roots, a certificate for another key, one that CheckCACertificate refuses,
// one that does not chain through Intermediates to one of Roots at now (at
// its NotBefore when that is later: an authority's clock slightly ahead), one
// whose chain has expired, and — when requestedTTL is positive — one whose
// remaining lifetime is less than MinLifetimeFraction of requestedTTL. It
// returns the remaining lifetime: NotAfter minus now.
func Validate(minted *MintedCA, key crypto.PublicKey, td spiffeid.TrustDomain, requestedTTL time.Duration, now time.Time) (time.Duration, error) {
	if minted == nil || minted.Cert == nil {
		return 0, &RefusedError{Reason: ErrNoCertificate}
	}
	c := minted.Cert
	refuse := func(reason error, format string, args ...any) (time.Duration, error) {
		return 0, &RefusedError{Cert: c, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if !PublicKeyEqual(key, c.PublicKey) {
		return refuse(ErrKeyMismatch, "the upstream signed a different public key")
	}
	if err := CheckCACertificate(c, td); err != nil {
		return 0, err
	}
	if len(minted.Roots) == 0 {
		return refuse(ErrNoRoots, "the upstream returned no trust anchors")
	}
	at := now
	if at.Before(c.NotBefore) {
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
	notAfter := minted.NotAfter()
	if !now.Before(notAfter) {
		return refuse(ErrExpired, "the chain ends at %v", notAfter)
	}
	left := notAfter.Sub(now)
	if requestedTTL > 0 && float64(left) < MinLifetimeFraction*float64(requestedTTL) {
		return refuse(ErrLifetimeTooShort, "%v left, asked for %v (at least %v%% required)", left.Round(time.Second), requestedTTL, int(MinLifetimeFraction*100))
	}
	return left, nil
}

// NotAfter is the end of m's chain: the earliest NotAfter of the CA
// certificate, its intermediates and the root it chains to (with several
// candidate roots, such as a root re-issued with the same key, the one that
// lives longest). Nothing the CA signs may outlive it.
func (m *MintedCA) NotAfter() time.Time {
	path := append([]*x509.Certificate{m.Cert}, m.Intermediates...)
	end := MinNotAfter(path...)
	var rootEnd time.Time
	for _, r := range m.Anchors() {
		if r.NotAfter.After(rootEnd) {
			rootEnd = r.NotAfter
		}
	}
	if !rootEnd.IsZero() && rootEnd.Before(end) {
		end = rootEnd
	}
	return end
}

// Anchors returns the roots m's chain ends at: the top of the chain itself
// when it is self-signed, otherwise those of Roots that signed it.
func (m *MintedCA) Anchors() []*x509.Certificate {
	top := m.Cert
	if n := len(m.Intermediates); n > 0 {
		top = m.Intermediates[n-1]
	}
	if IsSelfSigned(top) {
		return []*x509.Certificate{top}
	}
	var out []*x509.Certificate
	for _, r := range m.Roots {
		if top.CheckSignatureFrom(r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// LogMinted logs a CA that Validate accepted: at info level, or at warn level
// when the upstream granted noticeably less than asked (more than 5% less)
// or when the CA has a path length of zero (it can then sign SVIDs but not
// the intermediate CAs of downstream tiers).
func LogMinted(log *slog.Logger, kind string, minted *MintedCA, requestedTTL, granted time.Duration) {
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
