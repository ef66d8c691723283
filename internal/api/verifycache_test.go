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
// (the leaf's ID) for each verified leaf still referenced, and none for a
// leaf that failed, beyond the 8192 at which the former cache
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
	ids := make([]spiffeid.ID, leaves)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(time.Hour), URIs: []*url.URL{td.ID().URL()}}, caTmpl, other.Public(), other)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := x509.ParseCertificate(forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.verify([]*x509.Certificate{bad}, bundle, td.ID(), now); err == nil {
		t.Fatal("verify(a leaf not signed by the bundle's CA) succeeded")
	}
	if _, ok := v.lookup(bad, bundle); ok {
		t.Fatal("lookup(a leaf that failed verification) hit")
	}
	for i := range certs {
		ids[i] = spiffeid.RequireFromPathf(td, "/spire/agent/x/%d", i)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{ids[i].URL()}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, leafKey.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = []*x509.Certificate{leaf}
		if _, ok := v.lookup(leaf, bundle); ok {
			t.Fatalf("lookup(leaf %d) hit before its chain was verified", i)
		}
		if err := v.verify(certs[i], bundle, ids[i], now); err != nil {
			t.Fatalf("verify(leaf %d) = %v", i, err)
		}
	}
	if got := v.size(); got != leaves {
		t.Fatalf("cache holds %d chains after %d distinct leaves, want %d", got, leaves, leaves)
	}
	for i := range certs {
		if id, ok := v.lookup(certs[i][0], bundle); !ok || id != ids[i] {
			t.Fatalf("lookup(leaf %d) = %v, %v; want %v, true", i, id, ok, ids[i])
		}
		if _, ok := v.lookup(certs[i][0], x509bundle.New(td)); ok {
			t.Fatalf("lookup(leaf %d) against another bundle hit", i)
		}
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
