// Package federation fetches the bundles of other trust domains from their
// SPIFFE bundle endpoints (SPIFFE Trust Domain and Bundle specification),
// refusing anything a careful client must: no redirects, no plain HTTP, a
// bounded document, a valid SPIFFE bundle of the expected trust domain with
// at least one authority, and an endpoint that authenticates as configured.
package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/arborid/arbor/internal/datastore"
)

// Profiles of a bundle endpoint.
const (
	ProfileHTTPSWeb    = "https_web"
	ProfileHTTPSSPIFFE = "https_spiffe"
)

// MaxBundleSize bounds the bundle document read from an endpoint.
const MaxBundleSize = 4 << 20

// ErrRefused is wrapped by every refusal of what an endpoint answered or
// how it authenticated (as opposed to not reaching it): retrying will not
// help until the endpoint, or the relationship's settings, change.
var ErrRefused = errors.New("federation: bundle refused")

// Endpoint is where a trust domain's bundle is served and how the endpoint
// authenticates.
type Endpoint struct {
	TrustDomain spiffeid.TrustDomain
	URL         string
	// Profile is ProfileHTTPSWeb or ProfileHTTPSSPIFFE.
	Profile string
	// ID is the endpoint server's SPIFFE ID (ProfileHTTPSSPIFFE).
	ID spiffeid.ID
}

// Fetch GETs e's bundle within ctx (and at most 30 s). For https_spiffe the
// endpoint must present an X509-SVID with e.ID that chains to trust (the
// bundle held for e.ID's trust domain); for https_web a certificate for the
// URL's host that chains to roots (nil: the system roots).
func Fetch(ctx context.Context, e Endpoint, trust x509bundle.Source, roots *x509.CertPool) (*spiffebundle.Bundle, error) {
	u, err := url.Parse(e.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: endpoint URL %q is not an https:// URL", ErrRefused, e.URL)
	}
	var tc *tls.Config
	switch e.Profile {
	case ProfileHTTPSSPIFFE:
		if trust == nil || e.ID.IsZero() {
			return nil, fmt.Errorf("federation: https_spiffe needs the endpoint's SPIFFE ID and a bundle to verify it")
		}
		tc = tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(e.ID))
		// go-spiffe verifies the SVID in VerifyPeerCertificate, whose error
		// the TLS client returns as is: mark it, so that an endpoint that
		// fails to authenticate is told apart from one not reached.
		verify := tc.VerifyPeerCertificate
		tc.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			if err := verify(raw, chains); err != nil {
				return &unauthenticatedError{err: err}
			}
			return nil
		}
	case ProfileHTTPSWeb:
		tc = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	default:
		return nil, fmt.Errorf("federation: unknown profile %q", e.Profile)
	}
	tr := &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		// A bundle endpoint is its URL: a redirect could send the request
		// anywhere (SPIRE's http_challenge SSRF class).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("federation: request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var svidErr *unauthenticatedError
		if errors.As(err, &svidErr) {
			return nil, fmt.Errorf("%w: the endpoint %s did not authenticate as %s: %v", ErrRefused, e.URL, e.ID, svidErr)
		}
		var webErr *tls.CertificateVerificationError
		if errors.As(err, &webErr) {
			return nil, fmt.Errorf("%w: the endpoint %s did not authenticate: %v", ErrRefused, e.URL, webErr)
		}
		return nil, fmt.Errorf("federation: GET %s: %w", e.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET %s answered %s (redirects are not followed)", ErrRefused, e.URL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("federation: reading %s: %w", e.URL, err)
	}
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("%w: the document at %s is larger than %d bytes", ErrRefused, e.URL, MaxBundleSize)
	}
	b, err := Parse(e.TrustDomain, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRefused, e.URL, err)
	}
	return b, nil
}

// unauthenticatedError is the https_spiffe endpoint's X509-SVID refused:
// it does not chain to the held bundle or names another SPIFFE ID.
type unauthenticatedError struct{ err error }

func (e *unauthenticatedError) Error() string { return e.err.Error() }
func (e *unauthenticatedError) Unwrap() error { return e.err }

// Parse parses a SPIFFE bundle document of td that names at least one
// authority. An X.509 authority whose spiffe:// URI SAN names another trust
// domain is refused: SPIRE's and arbor's CAs carry their trust domain's ID,
// so such a bundle is another trust domain's, served by mistake or on
// purpose. An authority without a SPIFFE ID (an upstream CA) is accepted.
func Parse(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, err
	}
	if len(b.X509Authorities()) == 0 && len(b.JWTAuthorities()) == 0 {
		return nil, errors.New("the bundle names no authorities")
	}
	for _, c := range b.X509Authorities() {
		if err := checkAuthorityTrustDomain(td, c); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// checkAuthorityTrustDomain refuses c when a spiffe:// URI SAN of it is not
// in td.
func checkAuthorityTrustDomain(td spiffeid.TrustDomain, c *x509.Certificate) error {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return fmt.Errorf("X.509 authority %q carries the URI SAN %q, which is not a SPIFFE ID: %v", c.Subject, u, err)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("X.509 authority %q is a CA of trust domain %q (URI SAN %s), not of %q", c.Subject, id.TrustDomain(), id, td)
		}
	}
	return nil
}

// LoadBundleFile reads a bundle of td from a file: PEM certificates (the
// X.509 authorities) or a SPIFFE bundle document.
func LoadBundleFile(td spiffeid.TrustDomain, path string) (*spiffebundle.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("federation: bundle file: %w", err)
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		b, err := Parse(td, trimmed)
		if err != nil {
			return nil, fmt.Errorf("federation: bundle file %s: %w", path, err)
		}
		return b, nil
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("federation: bundle file %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("federation: bundle file %s holds neither PEM certificates nor a SPIFFE bundle", path)
	}
	return spiffebundle.FromX509Authorities(td, certs), nil
}

// DatastoreBundle is sb as the datastore stores it.
func DatastoreBundle(td spiffeid.TrustDomain, sb *spiffebundle.Bundle) *datastore.Bundle {
	b := &datastore.Bundle{TrustDomain: td}
	for _, c := range sb.X509Authorities() {
		b.X509Authorities = append(b.X509Authorities, datastore.X509Authority{Cert: c.Raw})
	}
	for kid, pub := range sb.JWTAuthorities() {
		if der, err := x509.MarshalPKIXPublicKey(pub); err == nil {
			b.JWTAuthorities = append(b.JWTAuthorities, datastore.JWTAuthority{KeyID: kid, PublicKey: der})
		}
	}
	if hint, ok := sb.RefreshHint(); ok {
		b.RefreshHint = int64(hint / time.Second)
	}
	if seq, ok := sb.SequenceNumber(); ok {
		b.SequenceNumber = seq
	}
	return b
}
