package loadgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// RawSigningRate measures how many X509-SVIDs per second this machine can
// make with the crypto a server must do for each one — parse the CSR, check
// its signature, build and sign a certificate with an ECDSA P-256 CA key —
// on all cores for d, with no RPC, no TLS and no datastore. It is the
// ceiling the issuance throughput of a server is compared with.
func RawSigningRate(d time.Duration) (float64, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	td := &url.URL{Scheme: "spiffe", Host: "example.org"}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotBefore: now, NotAfter: now.Add(24 * time.Hour),
		URIs: []*url.URL{td}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return 0, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return 0, err
	}
	var csrs [][]byte
	for range 16 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return 0, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			return 0, err
		}
		csrs = append(csrs, der)
	}
	var n atomic.Int64
	var failure atomic.Value
	deadline := time.Now().Add(d)
	serialLimit := new(big.Int).Lsh(big.NewInt(1), 128)
	var wg sync.WaitGroup
	for w := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline); i++ {
				req, err := x509.ParseCertificateRequest(csrs[i%len(csrs)])
				if err == nil {
					err = req.CheckSignature()
				}
				var serial *big.Int
				if err == nil {
					serial, err = rand.Int(rand.Reader, serialLimit)
				}
				if err == nil {
					t := time.Now()
					tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}},
						NotBefore: t, NotAfter: t.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
						ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
						BasicConstraintsValid: true, URIs: []*url.URL{{Scheme: "spiffe", Host: td.Host, Path: fmt.Sprintf("/w/%d", i)}}}
					_, err = x509.CreateCertificate(rand.Reader, tmpl, ca, req.PublicKey, caKey)
				}
				if err != nil {
					failure.Store(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := failure.Load().(error); ok {
		return 0, fmt.Errorf("loadgen: raw signing: %w", err)
	}
	return float64(n.Load()) / d.Seconds(), nil
}
