package server_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream"
)

// TestBundleEndpointHTTPSSPIFFE: the endpoint serves the own bundle (X.509
// authorities, JWT keys, sequence number, refresh hint) as a SPIFFE bundle,
// authenticated with the server's SVID spiffe://<td>/spire/server, as
// go-spiffe's federation client fetches it; a bundle change is served at
// once.
func TestBundleEndpointHTTPSSPIFFE(t *testing.T) {
	h := startServer(t, func(c *server.Config) {
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", RefreshHint: 90 * time.Second}
	})
	url := "https://" + h.srv.BundleEndpointAddr().String()
	fetch := func() *spiffeBundleView {
		t.Helper()
		b, err := federation.FetchBundle(ctxT(t), td, url, federation.WithSPIFFEAuth(h.bundle, spiffeID("/spire/server")))
		if err != nil {
			t.Fatalf("FetchBundle(%s): %v", url, err)
		}
		seq, _ := b.SequenceNumber()
		hint, _ := b.RefreshHint()
		return &spiffeBundleView{x509: len(b.X509Authorities()), jwt: len(b.JWTAuthorities()), seq: seq, hint: hint, certs: b.X509Authorities()}
	}
	want := h.snapshot().Bundle
	got := fetch()
	if got.x509 != len(want.X509Authorities) || got.jwt != len(want.JwtAuthorities) || got.seq != want.SequenceNumber || got.hint != 90*time.Second {
		t.Errorf("served bundle: %d X.509, %d JWT, sequence %d, hint %v; want %d, %d, %d, 90s",
			got.x509, got.jwt, got.seq, got.hint, len(want.X509Authorities), len(want.JwtAuthorities), want.SequenceNumber)
	}
	if !got.certs[0].Equal(h.bundle.X509Authorities()[0]) {
		t.Error("served X.509 authority is not the server's root")
	}

	// An authority appended through the admin API is served on the next request.
	extra := selfSignedCA(t, "appended")
	if _, err := bundlev1.NewBundleClient(h.admin).AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: extra.Raw}}}); err != nil {
		t.Fatalf("AppendBundle: %v", err)
	}
	if after := fetch(); after.x509 != got.x509+1 || after.seq <= got.seq {
		t.Errorf("after AppendBundle: %d X.509 authorities at sequence %d, want %d at a sequence above %d", after.x509, after.seq, got.x509+1, got.seq)
	}

	// Any other trust domain's view of the endpoint ID is refused by the client.
	other := spiffeid.RequireFromPath(td, "/not/the/server")
	if _, err := federation.FetchBundle(ctxT(t), td, url, federation.WithSPIFFEAuth(h.bundle, other)); err == nil {
		t.Error("FetchBundle expecting another endpoint ID succeeded")
	}
	checkBundleEndpointRefuses(t, h.srv.BundleEndpointAddr().String())
}

type spiffeBundleView struct {
	x509, jwt int
	seq       uint64
	hint      time.Duration
	certs     []*x509.Certificate
}

// TestBundleEndpointHTTPSWeb: with the https_web profile the endpoint
// presents a Web PKI certificate from files, and a replaced certificate is
// presented from the next connection on.
func TestBundleEndpointHTTPSWeb(t *testing.T) {
	dir := shortDir(t)
	ca := selfSignedCAKey(t)
	certFile, keyFile := filepath.Join(dir, "web.pem"), filepath.Join(dir, "web-key.pem")
	first := writeWebCert(t, ca, certFile, keyFile, 1)
	h := startServer(t, func(c *server.Config) {
		c.BundleEndpoint = &server.BundleEndpointConfig{ListenAddr: "127.0.0.1:0", Profile: server.ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile}
	})
	addr := h.srv.BundleEndpointAddr().String()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	b, err := federation.FetchBundle(ctxT(t), td, "https://"+addr, federation.WithWebPKIRoots(pool))
	if err != nil {
		t.Fatalf("FetchBundle over https_web: %v", err)
	}
	if len(b.X509Authorities()) != len(h.bundle.X509Authorities()) {
		t.Errorf("served %d X.509 authorities, want %d", len(b.X509Authorities()), len(h.bundle.X509Authorities()))
	}
	if got := presentedSerial(t, addr, pool); got.Cmp(first) != 0 {
		t.Fatalf("presented certificate serial %v, want %v", got, first)
	}
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	second := writeWebCert(t, ca, certFile, keyFile, 2)
	if got := presentedSerial(t, addr, pool); got.Cmp(second) != 0 {
		t.Errorf("after replacing the files, presented serial %v, want the new %v", got, second)
	}
	// A half-written replacement (key not matching) keeps the last good pair.
	if err := os.WriteFile(keyFile, pemKey(t, mustKey(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := presentedSerial(t, addr, pool); got.Cmp(second) != 0 {
		t.Errorf("with a mismatched key file, presented serial %v, want the last good %v", got, second)
	}
	checkBundleEndpointRefuses(t, addr)
}

func TestBundleEndpointBadConfigIsRefused(t *testing.T) {
	dir := shortDir(t)
	for name, be := range map[string]server.BundleEndpointConfig{
		"unknown profile":          {ListenAddr: "127.0.0.1:0", Profile: "http"},
		"https_web without files":  {ListenAddr: "127.0.0.1:0", Profile: server.ProfileHTTPSWeb},
		"https_spiffe with files":  {ListenAddr: "127.0.0.1:0", CertFile: "a", KeyFile: "b"},
		"https_web, missing files": {ListenAddr: "127.0.0.1:0", Profile: server.ProfileHTTPSWeb, CertFile: filepath.Join(dir, "no.pem"), KeyFile: filepath.Join(dir, "no-key.pem")},
		"negative refresh hint":    {ListenAddr: "127.0.0.1:0", RefreshHint: -time.Second},
	} {
		cfg := server.Config{Name: "bad", TrustDomain: td, ListenAddr: "127.0.0.1:0",
			AdminSocket: filepath.Join(dir, "a.sock"), StateDir: filepath.Join(dir, "state"), BundleEndpoint: &be}
		if _, err := server.New(context.Background(), cfg); err == nil {
			t.Errorf("%s: server.New accepted %+v", name, be)
		}
	}
}

// checkBundleEndpointRefuses: plain HTTP gets no bundle, and only GET is served.
func checkBundleEndpointRefuses(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(body), "keys") {
			t.Errorf("plain HTTP request answered %d %q, want no bundle", resp.StatusCode, body)
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr, strings.NewReader("{}"))
	resp, err = (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST to the bundle endpoint: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to the bundle endpoint: %d, want 405", resp.StatusCode)
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func mustKey(t *testing.T) *ecdsa.PrivateKey { return newKey(t) }

func selfSignedCAKey(t *testing.T) testCA {
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "web test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))(t)
	return testCA{cert: must(x509.ParseCertificate(der))(t), key: key}
}

func selfSignedCA(t *testing.T, cn string) *x509.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))(t)))(t)
}

// writeWebCert writes a 127.0.0.1 server certificate signed by ca and its key.
func writeWebCert(t *testing.T, ca testCA, certFile, keyFile string, serial int64) *big.Int {
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key))(t)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pemKey(t, key), 0o600); err != nil {
		t.Fatal(err)
	}
	return big.NewInt(serial)
}

func pemKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(key))(t)})
}

func presentedSerial(t *testing.T, addr string, pool *x509.CertPool) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to the bundle endpoint: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// fakeParent is a parent link (every ability of upstream.Parent).
type fakeParent struct{}

func (fakeParent) MintX509CA(context.Context, crypto.Signer, time.Duration) (*upstream.MintedCA, error) {
	return nil, errors.New("unused")
}
func (fakeParent) PublishJWTKey(context.Context, upstream.JWTKey) ([]upstream.JWTKey, error) {
	return nil, errors.New("unused")
}
func (fakeParent) FetchBundle(context.Context) (*upstream.Bundle, error) {
	return nil, errors.New("unused")
}
func (fakeParent) Reachable() bool { return false }

// TestParentLinkAsUpstreamIsRefused: a downstream tier's parent link given
// as a root's CA source would lose JWT publishing and bundle sync silently;
// server.New refuses it.
func TestParentLinkAsUpstreamIsRefused(t *testing.T) {
	dir := shortDir(t)
	cfg := server.Config{Name: "x", TrustDomain: td, ListenAddr: "127.0.0.1:0", AdminSocket: filepath.Join(dir, "a.sock"),
		StateDir: filepath.Join(dir, "state"), Upstream: fakeParent{}}
	if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "Parent") {
		t.Errorf("server.New with a parent link as Upstream: %v, want a refusal naming Parent", err)
	}
}
