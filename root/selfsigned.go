// Package root provides what makes a server the root tier of a trust domain:
// the upstream that mints the tier's CA certificate without a parent. The
// self-signed kind here makes each CA its own root; the trust domain's bundle
// then holds the current root and, during rotation, the next.
package root

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
)

var _ upstream.Authority = (*SelfSigned)(nil)

// SelfSigned is the upstream of a root tier that self-signs its CA
// certificates. Its fields must not be modified after first use.
type SelfSigned struct {
	// TrustDomain of the roots. Required.
	TrustDomain spiffeid.TrustDomain
	// Subject of the roots; the zero value means O=arbor, CN=<td> root. The
	// certificate's serial number is added as the subject's serialNumber.
	Subject pkix.Name
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Rand is the source of serial numbers; nil means crypto/rand.Reader.
	Rand io.Reader
}

// MintX509CA self-signs a root CA certificate for key, valid from now (less
// a small backdate) for ttl. The result's Roots is that certificate.
func (s *SelfSigned) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
	if s.TrustDomain.IsZero() {
		return nil, errors.New("root: trust domain is required")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("root: ttl must be positive, got %v", ttl)
	}
	now, r := time.Now, io.Reader(rand.Reader)
	if s.Now != nil {
		now = s.Now
	}
	if s.Rand != nil {
		r = s.Rand
	}
	subject := s.Subject
	if len(subject.ToRDNSequence()) == 0 {
		subject = pkix.Name{Organization: []string{"arbor"}, CommonName: s.TrustDomain.Name() + " root"}
	}
	serial, err := upstream.NewSerialNumber(r)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	t := now()
	tmpl, err := upstream.CATemplate(s.TrustDomain, key.Public(), serial, subject, t.Add(-upstream.Backdate), t.Add(ttl))
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	der, err := x509.CreateCertificate(r, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("root: self-sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("root: parse CA certificate: %w", err)
	}
	return &upstream.MintedCA{Cert: cert, Roots: []*x509.Certificate{cert}}, nil
}
