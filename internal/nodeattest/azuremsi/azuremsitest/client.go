package azuremsitest

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// Fake is what every fake here is: a TLS server with its own certificate.
type Fake interface {
	URL() string
	Certificate() *x509.Certificate
}

// Certificate is the fake's TLS certificate.
func (e *Entra) Certificate() *x509.Certificate { return e.srv.Certificate() }

// Certificate is the fake's TLS certificate.
func (m *IMDS) Certificate() *x509.Certificate { return m.srv.Certificate() }

// Certificate is the fake's TLS certificate.
func (a *ARM) Certificate() *x509.Certificate { return a.srv.Certificate() }

// Client returns an HTTP client that trusts the certificates of fakes and
// no other, as one client reaching Entra ID and Resource Manager does.
func Client(fakes ...Fake) *http.Client {
	pool := x509.NewCertPool()
	for _, f := range fakes {
		pool.AddCert(f.Certificate())
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
		},
	}
}
