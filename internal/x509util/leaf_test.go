package x509util

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// TestCreateLeafMatchesCryptoX509 checks that CreateLeaf encodes exactly what
// x509.CreateCertificate encodes for the same template (the to-be-signed
// bytes are identical) and that the signature verifies.
func TestCreateLeafMatchesCryptoX509(t *testing.T) {
	newCA := func(key crypto.Signer, skid []byte) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca", Organization: []string{"arbor"}},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: skid}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	leafEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse("spiffe://example.org/web")
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name  string
		caKey crypto.Signer
		skid  []byte
		pub   crypto.PublicKey
		leaf  Leaf
	}{
		{"p256 SVID with DNS", p256, []byte{1, 2, 3}, leafEC.Public(), Leaf{Subject: pkix.Name{Organization: []string{"SPIRE"}, Country: []string{"US"}, CommonName: "web.example.org"},
			URIs: []*url.URL{id}, DNSNames: []string{"web.example.org", "web"}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}},
		{"p384 CA, no SKID, empty subject", p384, nil, leafEC.Public(), Leaf{URIs: []*url.URL{id}, KeyUsage: x509.KeyUsageDigitalSignature}},
		{"rsa CA, rsa leaf key usage", rsaKey, []byte{9}, rsaKey.Public(), Leaf{Subject: pkix.Name{Organization: []string{"SPIRE"}},
			URIs: []*url.URL{id}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ca := newCA(c.caKey, c.skid)
			l := c.leaf
			l.SerialNumber = new(big.Int).SetBytes([]byte{0x7f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
			l.NotBefore, l.NotAfter = at, at.Add(time.Hour)
			fast, err := CreateLeaf(rand.Reader, &l, ca, c.pub, c.caKey)
			if err != nil {
				t.Fatal(err)
			}
			std, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
				SerialNumber: l.SerialNumber, Subject: l.Subject, NotBefore: l.NotBefore, NotAfter: l.NotAfter,
				URIs: l.URIs, DNSNames: l.DNSNames, KeyUsage: l.KeyUsage, ExtKeyUsage: l.ExtKeyUsage, BasicConstraintsValid: true,
			}, ca, c.pub, c.caKey)
			if err != nil {
				t.Fatal(err)
			}
			fc, err := x509.ParseCertificate(fast)
			if err != nil {
				t.Fatalf("parse CreateLeaf output: %v", err)
			}
			sc, _ := x509.ParseCertificate(std)
			if !bytes.Equal(fc.RawTBSCertificate, sc.RawTBSCertificate) {
				t.Errorf("to-be-signed bytes differ from crypto/x509's:\n fast %x\n  std %x", fc.RawTBSCertificate, sc.RawTBSCertificate)
			}
			if fc.SignatureAlgorithm != sc.SignatureAlgorithm {
				t.Errorf("signature algorithm %v, crypto/x509 %v", fc.SignatureAlgorithm, sc.SignatureAlgorithm)
			}
			if err := fc.CheckSignatureFrom(ca); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
			if _, isRSA := c.caKey.(*rsa.PrivateKey); isRSA && !bytes.Equal(fast, std) {
				t.Error("PKCS#1 v1.5 signatures are deterministic, yet the certificates differ")
			}
		})
	}
	// Outside UTCTime's range the caller must fall back.
	far := Leaf{SerialNumber: big.NewInt(5), NotBefore: at, NotAfter: time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := CreateLeaf(rand.Reader, &far, newCA(p256, nil), leafEC.Public(), p256); err != ErrUnsupportedLeaf {
		t.Errorf("NotAfter in 2051: %v, want ErrUnsupportedLeaf", err)
	}
}
