package ca

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/x509util"
	"github.com/arborid/arbor/upstream"
)

// X509SVIDParams describes an X509-SVID to sign.
type X509SVIDParams struct {
	// ID is the SPIFFE ID; it must be in the manager's trust domain.
	ID spiffeid.ID
	// PublicKey is the SVID holder's key.
	PublicKey crypto.PublicKey
	// TTL is the requested lifetime; zero means Config.X509SVIDTTL. The
	// SVID never outlives the signing CA or its chain.
	TTL time.Duration
	// DNSNames are optional DNS SANs; the first becomes the subject's common
	// name when Subject has none.
	DNSNames []string
	// Subject of the SVID; the zero value means O=arbor, C=US.
	Subject pkix.Name
}

var defaultSVIDSubject = pkix.Name{Country: []string{"US"}, Organization: []string{"arbor"}}

// activeX509 returns the active X.509 CA.
func (m *Manager) activeX509() (*x509Slot, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.x509Cur == nil {
		return nil, ErrNotInitialized
	}
	return m.x509Cur, nil
}

// SignX509SVID signs an X509-SVID and returns its chain: the leaf, then the
// CA certificate and intermediates excluding any self-signed root (so for a
// root tier whose CA is the root, just the leaf).
func (m *Manager) SignX509SVID(ctx context.Context, p X509SVIDParams) ([]*x509.Certificate, error) {
	ca, err := m.activeX509()
	if err != nil {
		return nil, err
	}
	return m.signX509SVID(ca, p)
}

func (m *Manager) signX509SVID(ca *x509Slot, p X509SVIDParams) ([]*x509.Certificate, error) {
	if err := m.checkID(p.ID); err != nil {
		return nil, err
	}
	if err := upstream.CheckPublicKey(p.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	for _, n := range p.DNSNames {
		if n == "" {
			return nil, fmt.Errorf("%w: empty DNS name", ErrInvalidArgument)
		}
	}
	ttl, err := ttlOrDefault(p.TTL, m.cfg.X509SVIDTTL)
	if err != nil {
		return nil, err
	}
	now := m.now()
	notAfter, err := capNotAfter(now, ttl, ca.notAfter)
	if err != nil {
		return nil, err
	}
	serial, err := upstream.NewSerialNumber(m.rand)
	if err != nil {
		return nil, err
	}
	subject := p.Subject
	if subjectEmpty(subject) {
		subject = defaultSVIDSubject
	}
	if subject.CommonName == "" && len(p.DNSNames) > 0 {
		subject.CommonName = p.DNSNames[0]
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := p.PublicKey.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-upstream.Backdate),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{p.ID.URL()},
		DNSNames:              p.DNSNames,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leaf, err := m.createLeaf(tmpl, ca, p.PublicKey)
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{leaf}, ca.chain...), nil
}

// SignDownstreamX509CA signs a CA certificate for a downstream tier's key
// (URI SAN spiffe://<td>, basic constraints CA, keyCertSign|cRLSign) valid
// for ttl (zero means Config.CATTL) but never past the signing CA's chain,
// and returns it followed by this tier's chain (excluding a self-signed
// root). The signing CA is the active one or, as Config.ChooseDownstreamCA
// decides, the prepared one.
func (m *Manager) SignDownstreamX509CA(ctx context.Context, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := upstream.CheckPublicKey(pub); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	ttl, err := ttlOrDefault(ttl, m.cfg.CATTL)
	if err != nil {
		return nil, err
	}
	now := m.now()
	ca, err := m.downstreamCA(now, ttl)
	if err != nil {
		return nil, err
	}
	notAfter, err := capNotAfter(now, ttl, ca.notAfter)
	if err != nil {
		return nil, err
	}
	serial, err := upstream.NewSerialNumber(m.rand)
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{Organization: []string{"arbor"}, CommonName: m.cfg.TrustDomain.Name() + " intermediate"}
	tmpl, err := upstream.CATemplate(m.cfg.TrustDomain, pub, serial, subject, now.Add(-upstream.Backdate), notAfter)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c, err := m.createCertificate(tmpl, ca, pub)
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{c}, ca.chain...), nil
}

// downstreamCA picks the CA that signs a child's CA at now for ttl:
// Config.ChooseDownstreamCA decides between the active and the prepared
// one (the active one when it is nil).
func (m *Manager) downstreamCA(now time.Time, ttl time.Duration) (*x509Slot, error) {
	m.mu.RLock()
	cur, next := m.x509Cur, m.x509Next
	m.mu.RUnlock()
	if cur == nil {
		return nil, ErrNotInitialized
	}
	if next == nil || m.cfg.ChooseDownstreamCA == nil {
		return cur, nil
	}
	if m.cfg.ChooseDownstreamCA(now, ttl, &cur.minted, &next.minted) == &next.minted {
		return next, nil
	}
	return cur, nil
}

// createLeaf signs an SVID with x509util.CreateLeaf (the same encoding as
// crypto/x509 without re-verifying our own signature, the hot path of
// issuance), falling back to crypto/x509 for what it does not encode.
func (m *Manager) createLeaf(tmpl *x509.Certificate, ca *x509Slot, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509util.CreateLeaf(m.rand, &x509util.Leaf{
		SerialNumber: tmpl.SerialNumber, Subject: tmpl.Subject, NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter,
		URIs: tmpl.URIs, DNSNames: tmpl.DNSNames, KeyUsage: tmpl.KeyUsage, ExtKeyUsage: tmpl.ExtKeyUsage,
	}, ca.cert(), pub, ca.key)
	if errors.Is(err, x509util.ErrUnsupportedLeaf) {
		return m.createCertificate(tmpl, ca, pub)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse signed certificate: %w", err)
	}
	return c, nil
}

func (m *Manager) createCertificate(tmpl *x509.Certificate, ca *x509Slot, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(m.rand, tmpl, ca.cert(), pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse signed certificate: %w", err)
	}
	return c, nil
}

// checkID accepts a SPIFFE ID of the manager's trust domain.
func (m *Manager) checkID(id spiffeid.ID) error {
	if id.IsZero() {
		return fmt.Errorf("%w: SPIFFE ID is empty", ErrInvalidArgument)
	}
	if !id.MemberOf(m.cfg.TrustDomain) {
		return fmt.Errorf("%w: SPIFFE ID %q is not in trust domain %q", ErrInvalidArgument, id, m.cfg.TrustDomain)
	}
	return nil
}

func ttlOrDefault(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: negative TTL %v", ErrInvalidArgument, ttl)
	case ttl == 0:
		return def, nil
	}
	return ttl, nil
}

// capNotAfter returns min(now+ttl, limit), or ErrExpired if that is not
// after now.
func capNotAfter(now time.Time, ttl time.Duration, limit time.Time) (time.Time, error) {
	notAfter := now.Add(ttl)
	if limit.Before(notAfter) {
		notAfter = limit
	}
	if !notAfter.After(now) {
		return time.Time{}, fmt.Errorf("%w at %v", ErrExpired, limit)
	}
	return notAfter, nil
}

func subjectEmpty(n pkix.Name) bool {
	return len(n.ToRDNSequence()) == 0
}

// jwtClaims are the claims of a JWT-SVID; aud is always an array.
type jwtClaims struct {
	Subject  string           `json:"sub"`
	Audience []string         `json:"aud"`
	Expiry   *jwt.NumericDate `json:"exp"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	Issuer   string           `json:"iss,omitempty"`
}

// SignJWTSVID signs a JWT-SVID for id and audience (non-empty) with the
// active JWT key. ttl zero means Config.JWTSVIDTTL; the token never outlives
// the key.
func (m *Manager) SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (token string, issuedAt, expiresAt time.Time, err error) {
	m.mu.RLock()
	key := m.jwtCur
	m.mu.RUnlock()
	if key == nil {
		return "", time.Time{}, time.Time{}, ErrNotInitialized
	}
	if err := m.checkID(id); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	if len(audience) == 0 {
		return "", time.Time{}, time.Time{}, fmt.Errorf("%w: audience is empty", ErrInvalidArgument)
	}
	for _, a := range audience {
		if a == "" {
			return "", time.Time{}, time.Time{}, fmt.Errorf("%w: empty audience value", ErrInvalidArgument)
		}
	}
	if ttl, err = ttlOrDefault(ttl, m.cfg.JWTSVIDTTL); err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	// JWT times have one-second resolution: truncate so that the returned
	// times are exactly those in the token.
	now := m.now().Truncate(time.Second)
	exp, err := capNotAfter(now, ttl, key.notAfter.Truncate(time.Second))
	if err != nil {
		return "", time.Time{}, time.Time{}, err
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.alg), Key: jose.JSONWebKey{Key: key.key, KeyID: key.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("ca: JWT signer: %w", err)
	}
	claims := jwtClaims{
		Subject:  id.String(),
		Audience: audience,
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(now),
		Issuer:   m.cfg.JWTIssuer,
	}
	token, err = jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("ca: sign JWT: %w", err)
	}
	return token, now, exp, nil
}
