package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestVerifyCacheHoldsEveryLiveLeaf checks that the cache keeps one entry
// for each leaf still referenced, beyond the 8192 at which the former cache
// reset itself, and lets an entry go when its leaf is collected.
func TestVerifyCacheHoldsEveryLiveLeaf(t *testing.T) {
	const leaves = 9000
	td := spiffeid.RequireTrustDomainFromString("example.org")
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		URIs: []*url.URL{td.ID().URL()}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca})
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var v verifyCache
	certs := make([][]*x509.Certificate, leaves)
	for i := range certs {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{spiffeid.RequireFromPathf(td, "/spire/agent/x/%d", i).URL()}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, leafKey.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = []*x509.Certificate{leaf}
		if err := v.check(certs[i], bundle, now); err != nil {
			t.Fatalf("check(leaf %d) = %v", i, err)
		}
	}
	if got := v.size(); got != leaves {
		t.Fatalf("cache holds %d chains after %d distinct leaves, want %d", got, leaves, leaves)
	}
	for i := range certs {
		if err := v.check(certs[i], bundle, now); err != nil {
			t.Fatalf("second check(leaf %d) = %v", i, err)
		}
	}
	if got := v.size(); got != leaves {
		t.Fatalf("cache holds %d chains after checking each leaf twice, want %d", got, leaves)
	}
	runtime.KeepAlive(certs)
	certs = nil
	deadline := time.Now().Add(20 * time.Second)
	for v.size() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("cache still holds %d chains 20s after their leaves were dropped", v.size())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
