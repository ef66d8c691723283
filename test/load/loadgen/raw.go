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
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Raw is the result of RawSigningRate.
type Raw struct {
	// PerSecond is SVIDs signed per second of wall time on all cores.
	PerSecond float64 `json:"svids_per_second"`
	// CPUMicrosPerSVID is this process's CPU time per SVID, which does not
	// depend on how much of the machine other processes take meanwhile.
	CPUMicrosPerSVID float64 `json:"cpu_us_per_svid"`
}

// RawSigningRate measures how many X509-SVIDs per second this machine can
// make with the crypto a server must do for each one — parse the CSR, check
// its signature, build and sign a certificate with an ECDSA P-256 CA key —
// on all cores for d, with no RPC, no TLS and no datastore. It is the
// ceiling the issuance throughput of a server is compared with.
func RawSigningRate(d time.Duration) (Raw, error) {
	var out Raw
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return out, err
	}
	now := time.Now()
	td := &url.URL{Scheme: "spiffe", Host: "example.org"}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotBefore: now, NotAfter: now.Add(24 * time.Hour),
		URIs: []*url.URL{td}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return out, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return out, err
	}
	var csrs [][]byte
	for range 16 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return out, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			return out, err
		}
		csrs = append(csrs, der)
	}
	var n atomic.Int64
	var failure atomic.Value
	before, err := ReadProc(os.Getpid())
	if err != nil {
		return out, err
	}
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
		return out, fmt.Errorf("loadgen: raw signing: %w", err)
	}
	after, err := ReadProc(os.Getpid())
	if err != nil {
		return out, err
	}
	out.PerSecond = float64(n.Load()) / d.Seconds()
	if n.Load() > 0 {
		out.CPUMicrosPerSVID = (after.CPUSeconds - before.CPUSeconds) * 1e6 / float64(n.Load())
	}
	return out, nil
}
