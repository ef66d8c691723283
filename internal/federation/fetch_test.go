package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var partner = spiffeid.RequireTrustDomainFromString("partner.test")

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// testPKI is a CA and what it signs.
type testPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T) testPKI {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{partner.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testPKI{cert: c, key: key}
}

// leaf is a server certificate for 127.0.0.1, with uri as its URI SAN when set.
func (p testPKI) leaf(t *testing.T, uri string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// validDoc is a SPIFFE bundle document of partner with one X.509 authority.
func validDoc(t *testing.T, p testPKI) []byte {
	b := spiffebundle.New(partner)
	b.AddX509Authority(p.cert)
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func serve(t *testing.T, cert tls.Certificate, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestFetchRefusesWhatACarefulClientMust(t *testing.T) {
	p := newPKI(t)
	roots := x509.NewCertPool()
	roots.AddCert(p.cert)
	doc := validDoc(t, p)
	good := serve(t, p.leaf(t, ""), func(w http.ResponseWriter, r *http.Request) { w.Write(doc) })
	web := func(u string) Endpoint { return Endpoint{TrustDomain: partner, URL: u, Profile: ProfileHTTPSWeb} }

	b, err := Fetch(ctx(t), web(good.URL), nil, roots)
	if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(p.cert) {
		t.Fatalf("Fetch(valid endpoint) = %v, %v; want the one authority", b, err)
	}

	refusals := map[string]http.HandlerFunc{
		"redirect": func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, good.URL, http.StatusFound) },
		"oversize": func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":[`))
			w.Write([]byte(strings.Repeat(" ", MaxBundleSize)))
			w.Write([]byte(`]}`))
		},
		"malformed JSON": func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"keys": [`)) },
		"no keys":        func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"keYs": []}`)) },
		"error status":   func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", http.StatusInternalServerError) },
	}
	for name, h := range refusals {
		srv := serve(t, p.leaf(t, ""), h)
		if _, err := Fetch(ctx(t), web(srv.URL), nil, roots); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: Fetch error = %v, want ErrRefused", name, err)
		}
	}
	if _, err := Fetch(ctx(t), web(strings.Replace(good.URL, "https://", "http://", 1)), nil, roots); !errors.Is(err, ErrRefused) {
		t.Errorf("plain HTTP URL: Fetch error = %v, want ErrRefused", err)
	}
	if _, err := Fetch(ctx(t), web(good.URL), nil, x509.NewCertPool()); err == nil {
		t.Error("Fetch with roots that do not include the endpoint's CA succeeded")
	}
}

func TestFetchHTTPSSPIFFEAuthenticatesTheEndpointID(t *testing.T) {
	p := newPKI(t)
	doc := validDoc(t, p)
	serverID := spiffeid.RequireFromPath(partner, "/spire/server")
	srv := serve(t, p.leaf(t, serverID.String()), func(w http.ResponseWriter, r *http.Request) { w.Write(doc) })
	trust := x509bundle.FromX509Authorities(partner, []*x509.Certificate{p.cert})
	e := Endpoint{TrustDomain: partner, URL: srv.URL, Profile: ProfileHTTPSSPIFFE, ID: serverID}
	if _, err := Fetch(ctx(t), e, trust, nil); err != nil {
		t.Fatalf("Fetch(https_spiffe, right ID) error = %v", err)
	}
	e.ID = spiffeid.RequireFromPath(partner, "/somebody/else")
	if _, err := Fetch(ctx(t), e, trust, nil); err == nil {
		t.Error("Fetch(https_spiffe) accepted an endpoint with another SPIFFE ID")
	}
	e.ID = serverID
	other := newPKI(t)
	if _, err := Fetch(ctx(t), e, x509bundle.FromX509Authorities(partner, []*x509.Certificate{other.cert}), nil); err == nil {
		t.Error("Fetch(https_spiffe) accepted an endpoint SVID that does not chain to the held bundle")
	}
}

// FuzzParse: any document either parses to a bundle with an authority or is
// refused, never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x":"AA","y":"AA","x5c":["AAAA"]}],"spiffe_sequence":1,"spiffe_refresh_hint":300}`))
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kty":"EC","kid":"k","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keYs":[]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(partner, data)
		if err == nil && len(b.X509Authorities())+len(b.JWTAuthorities()) == 0 {
			t.Fatal("Parse accepted a bundle with no authorities")
		}
	})
}
