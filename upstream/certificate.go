// Package x509util holds the certificate templates and small X.509 helpers
// shared by every tier's CA: the CA manager (internal/ca) and the upstreams
// that mint a tier's CA certificate (root, downstream, upstream adapters).
package x509util

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RFC 5280 section 4.2.1.2 method (1) key identifier, not a security use
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Backdate is how far NotBefore is set before the issuing time, so that a
// peer whose clock lags slightly still accepts a fresh certificate.
const Backdate = 10 * time.Second

// ErrUnsupportedKey is returned for a public key type or size that arbor does
// not issue certificates for.
var ErrUnsupportedKey = errors.New("x509util: unsupported public key")

// serialLimit is 2^128: serial numbers are random 128-bit positive integers.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// NewSerialNumber returns a random serial number in [1, 2^128).
func NewSerialNumber(r io.Reader) (*big.Int, error) {
	for {
		n, err := randInt(r, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("x509util: generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// randInt reads a uniform integer in [0, max) where max is a power of two.
func randInt(r io.Reader, max *big.Int) (*big.Int, error) {
	b := make([]byte, (max.BitLen()-1+7)/8)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return new(big.Int).SetBytes(b), nil
}

// SubjectKeyID returns the key identifier of pub: the SHA-1 hash of the
// subjectPublicKey bit string (RFC 5280, section 4.2.1.2, method 1).
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("x509util: marshal public key: %w", err)
	}
	var spki struct {
		Algorithm        pkix.AlgorithmIdentifier
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("x509util: parse public key: %w", err)
	}
	sum := sha1.Sum(spki.SubjectPublicKey.Bytes) //nolint:gosec // see import
	return sum[:], nil
}

// CheckPublicKey reports whether pub is a key arbor signs certificates for:
// ECDSA P-256/P-384/P-521, RSA of at least 2048 bits, or Ed25519.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ecdsa curve %v", ErrUnsupportedKey, k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: rsa key of %d bits, want at least 2048", ErrUnsupportedKey, k.N.BitLen())
		}
		return nil
	case ed25519.PublicKey:
		return nil
	case nil:
		return fmt.Errorf("%w: no public key", ErrUnsupportedKey)
	default:
		return fmt.Errorf("%w: type %T", ErrUnsupportedKey, pub)
	}
}

// TrustDomainURI returns spiffe://<td>, the URI SAN of a CA certificate.
func TrustDomainURI(td spiffeid.TrustDomain) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: td.Name()}
}

// CATemplate returns the template of a CA certificate of trust domain td for
// pub: URI SAN spiffe://<td>, basic constraints CA, key usage
// keyCertSign|cRLSign and the subject key identifier of pub. When the
// subject has no serial number, the certificate's serial is added to it so
// that CA certificates of successive rotations have distinct subjects.
func CATemplate(td spiffeid.TrustDomain, pub crypto.PublicKey, serial *big.Int, subject pkix.Name, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if td.IsZero() {
		return nil, errors.New("x509util: trust domain is empty")
	}
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	ski, err := SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	if subject.SerialNumber == "" {
		subject.SerialNumber = serial.String()
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{TrustDomainURI(td)},
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
	}, nil
}

// IsSelfSigned reports whether c is signed by its own key (a root).
func IsSelfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		return false
	}
	return c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// PublicKeyEqual reports whether two public keys are the same key.
func PublicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// MinNotAfter returns the earliest NotAfter of certs (zero time if none).
func MinNotAfter(certs ...*x509.Certificate) time.Time {
	var min time.Time
	for _, c := range certs {
		if min.IsZero() || c.NotAfter.Before(min) {
			min = c.NotAfter
		}
	}
	return min
}
