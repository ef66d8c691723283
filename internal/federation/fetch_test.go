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

// newPKI is a CA of partner (its URI SAN is partner's ID, as SPIRE's are).
func newPKI(t testing.TB) testPKI { return newCA(t, partner.ID().URL()) }

// newCA is a self-signed CA with uris as its URI SANs.
func newCA(t testing.TB, uris ...*url.URL) testPKI {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: uris}
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

// validDoc is a SPIFFE bundle document of partner with p's CA as its X.509
// authorities.
func validDoc(t testing.TB, p ...testPKI) []byte {
	b := spiffebundle.New(partner)
	for _, ca := range p {
		b.AddX509Authority(ca.cert)
	}
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
		"another trust domain's bundle": func(w http.ResponseWriter, r *http.Request) {
			w.Write(validDoc(t, newCA(t, other.ID().URL())))
		},
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
	if _, err := Fetch(ctx(t), web(good.URL), nil, x509.NewCertPool()); !errors.Is(err, ErrRefused) {
		t.Errorf("Fetch with roots that do not include the endpoint's CA: error = %v, want ErrRefused", err)
	}
	closed := httptest.NewTLSServer(http.NotFoundHandler())
	closed.Close()
	if _, err := Fetch(ctx(t), web(closed.URL), nil, roots); err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("Fetch from an address nobody serves: error = %v, want one that is not ErrRefused (not reached, not refused)", err)
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
	if _, err := Fetch(ctx(t), e, trust, nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Fetch(https_spiffe, endpoint with another SPIFFE ID) error = %v, want ErrRefused", err)
	}
	e.ID = serverID
	stranger := newPKI(t)
	if _, err := Fetch(ctx(t), e, x509bundle.FromX509Authorities(partner, []*x509.Certificate{stranger.cert}), nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Fetch(https_spiffe, SVID not chaining to the held bundle) error = %v, want ErrRefused", err)
	}
}

var other = spiffeid.RequireTrustDomainFromString("other.test")

// TestParseRefusesAnotherTrustDomainsAuthority: a CA naming another trust
// domain in its SPIFFE ID makes the document another trust domain's bundle;
// a CA without one (an upstream CA) is fine.
func TestParseRefusesAnotherTrustDomainsAuthority(t *testing.T) {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name string
		cas  []testPKI
		// wantErr lists what the refusal must name; nil: accepted.
		wantErr []string
	}{
		{"CA of the trust domain", []testPKI{newPKI(t)}, nil},
		{"CA with a path in its SPIFFE ID", []testPKI{newCA(t, mustURL("spiffe://partner.test/spire/server"))}, nil},
		{"CA without URI SANs", []testPKI{newCA(t)}, nil},
		{"CA with a non-SPIFFE URI SAN", []testPKI{newCA(t, mustURL("https://ca.example/partner"))}, nil},
		{"CA of another trust domain", []testPKI{newCA(t, other.ID().URL())}, []string{`"other.test"`, `"partner.test"`}},
		{"second CA of another trust domain", []testPKI{newPKI(t), newCA(t, other.ID().URL())}, []string{`"other.test"`, `"partner.test"`}},
		{"CA of both", []testPKI{newCA(t, partner.ID().URL(), other.ID().URL())}, []string{`"other.test"`, `"partner.test"`}},
		{"CA with an invalid SPIFFE ID", []testPKI{newCA(t, &url.URL{Scheme: "spiffe", Host: "Partner.Test"})}, []string{"not a SPIFFE ID"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse(partner, validDoc(t, tt.cas...))
			if tt.wantErr == nil {
				if err != nil || len(b.X509Authorities()) != len(tt.cas) {
					t.Fatalf("Parse = %v, %v; want the %d authorities", b, err, len(tt.cas))
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted the bundle (%d X.509 authorities), want a refusal", len(b.X509Authorities()))
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error %q does not name %s", err, w)
				}
			}
		})
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
	f.Add(validDoc(f, newPKI(f)))
	f.Add(validDoc(f, newCA(f, other.ID().URL())))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(partner, data)
		if err != nil {
			return
		}
		if len(b.X509Authorities())+len(b.JWTAuthorities()) == 0 {
			t.Fatal("Parse accepted a bundle with no authorities")
		}
		for _, c := range b.X509Authorities() {
			for _, u := range c.URIs {
				if id, err := spiffeid.FromURI(u); err == nil && id.TrustDomain() != partner {
					t.Fatalf("Parse accepted an authority of %q in a bundle of %q", id.TrustDomain(), partner)
				}
			}
		}
	})
}
