package upstream

// The CA certificate profile every source mints to (the other side of the
// rules Validate checks) and the small X.509 helpers the sources, the CA
// manager and the API share.

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
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Backdate is how far NotBefore is set before the issuing time, so that a
// peer whose clock lags slightly still accepts a fresh certificate.
const Backdate = 10 * time.Second

// ErrUnsupportedKey is returned for a public key type or size that arbor does
// not issue certificates for.
var ErrUnsupportedKey = errors.New("upstream: unsupported public key")

// serialLimit is 2^128: serial numbers are random 128-bit positive integers.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// NewSerialNumber returns a random serial number in [1, 2^128).
func NewSerialNumber(r io.Reader) (*big.Int, error) {
	for {
		n, err := randInt(r, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("upstream: generate serial number: %w", err)
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
		return nil, fmt.Errorf("upstream: marshal public key: %w", err)
	}
	var spki struct {
		Algorithm        pkix.AlgorithmIdentifier
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("upstream: parse public key: %w", err)
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
		return nil, errors.New("upstream: trust domain is empty")
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

// ParseCertificatesDER parses DER certificates, in order.
func ParseCertificatesDER(ders ...[]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("upstream: parse certificate %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
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

// ParsePrivateKeyPEM parses the first private key block of data: PKCS#8
// ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
// Other blocks are skipped; an encrypted key is refused with a hint.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key block")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			if strings.Contains(b.Type, "ENCRYPTED") {
				return nil, fmt.Errorf("%s blocks are not supported: decrypt the key first", b.Type)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%T is not a signing key", k)
		}
		return s, nil
	}
}

// SplitChain sorts the certificates an authority returned above a CA
// certificate: self-signed ones become roots and the others intermediates,
// in order. When anchorTop is true and there is no self-signed certificate,
// the last certificate becomes the (partial-chain) root, for authorities whose
// published chain stops below an offline root.
func SplitChain(chain []*x509.Certificate, anchorTop bool) (intermediates, roots []*x509.Certificate) {
	for _, c := range chain {
		if IsSelfSigned(c) {
			roots = AppendUnique(roots, c)
		} else {
			intermediates = AppendUnique(intermediates, c)
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
