package admin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// FuzzParseBundle: whatever a bundle file holds (`bundle set`, `bundle
// show` round trips), ParseBundle never panics, and what it accepts encodes
// back and parses to the same authorities.
func FuzzParseBundle(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "seed"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	seed := &types.Bundle{TrustDomain: "example.org", RefreshHint: 300, SequenceNumber: 3,
		X509Authorities: []*types.X509Certificate{{Asn1: der}},
		JwtAuthorities:  []*types.JWTKey{{KeyId: "k1", PublicKey: pub, ExpiresAt: time.Now().Add(time.Hour).Unix()}}}
	for _, format := range []BundleFormat{BundlePEM, BundleSPIFFE} {
		doc, err := MarshalBundle(seed, format)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(doc, format == BundleSPIFFE)
		f.Add(doc[:len(doc)/2], format == BundleSPIFFE)
	}
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}]}`), true)
	f.Add([]byte(`{"keys":[],"spiffe_sequence":-1}`), true)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, spiffe bool) {
		format := BundlePEM
		if spiffe {
			format = BundleSPIFFE
		}
		b, err := ParseBundle("example.org", data, format)
		if err != nil {
			return
		}
		again, err := MarshalBundle(b, format)
		if err != nil {
			t.Fatalf("MarshalBundle of an accepted bundle: %v", err)
		}
		b2, err := ParseBundle("example.org", again, format)
		if err != nil {
			t.Fatalf("ParseBundle of its own encoding: %v", err)
		}
		if len(b2.X509Authorities) != len(b.X509Authorities) || len(b2.JwtAuthorities) != len(b.JwtAuthorities) {
			t.Fatalf("round trip changed the bundle: %d/%d X.509, %d/%d JWT", len(b.X509Authorities), len(b2.X509Authorities), len(b.JwtAuthorities), len(b2.JwtAuthorities))
		}
	})
}
