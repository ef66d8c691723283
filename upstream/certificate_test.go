package upstream_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
)

func TestNewSerialNumber(t *testing.T) {
	seen := map[string]bool{}
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for range 100 {
		n, err := upstream.NewSerialNumber(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if n.Sign() <= 0 || n.Cmp(limit) >= 0 {
			t.Errorf("serial %v outside [1, 2^128)", n)
		}
		if seen[n.String()] {
			t.Errorf("serial %v repeated", n)
		}
		seen[n.String()] = true
	}
	if _, err := upstream.NewSerialNumber(bytes.NewReader([]byte{1, 2})); err == nil {
		t.Errorf("NewSerialNumber with a short reader succeeded")
	}
}

func TestCheckPublicKey(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		pub  crypto.PublicKey
		ok   bool
	}{
		{"p256", p256.Public(), true},
		{"rsa2048", rsa2048.Public(), true},
		{"ed25519", edPub, true},
		{"p224", p224.Public(), false},
		{"rsa1024", rsa1024.Public(), false},
		{"nil", nil, false},
		{"private key", p256, false},
	}
	for _, tt := range tests {
		err := upstream.CheckPublicKey(tt.pub)
		if (err == nil) != tt.ok {
			t.Errorf("CheckPublicKey(%s) = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, upstream.ErrUnsupportedKey) {
			t.Errorf("CheckPublicKey(%s) error %v is not ErrUnsupportedKey", tt.name, err)
		}
	}
}

func TestCATemplateAndIsSelfSigned(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	mk := func(key *ecdsa.PrivateKey, pub crypto.PublicKey, parent *x509.Certificate, serial int64) *x509.Certificate {
		t.Helper()
		tmpl, err := upstream.CATemplate(td, pub, big.NewInt(serial), pkix.Name{CommonName: "ca"}, now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootCert := mk(rootKey, rootKey.Public(), nil, 7)
	sub := mk(rootKey, subKey.Public(), rootCert, 8)
	if !upstream.IsSelfSigned(rootCert) || upstream.IsSelfSigned(sub) {
		t.Errorf("IsSelfSigned(root, sub) = %v, %v; want true, false", upstream.IsSelfSigned(rootCert), upstream.IsSelfSigned(sub))
	}
	ski, err := upstream.SubjectKeyID(subKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sub.SubjectKeyId, ski) || !bytes.Equal(sub.AuthorityKeyId, rootCert.SubjectKeyId) {
		t.Errorf("key identifiers: SKI %x want %x, AKI %x want %x", sub.SubjectKeyId, ski, sub.AuthorityKeyId, rootCert.SubjectKeyId)
	}
	if sub.Subject.SerialNumber != "8" || sub.URIs[0].String() != "spiffe://example.org" || !sub.IsCA {
		t.Errorf("template: subject serial %q, URI %v, CA %v", sub.Subject.SerialNumber, sub.URIs[0], sub.IsCA)
	}
	if _, err := upstream.CATemplate(spiffeid.TrustDomain{}, subKey.Public(), big.NewInt(1), pkix.Name{}, now, now); err == nil {
		t.Errorf("CATemplate with no trust domain succeeded")
	}
}
