package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// partnerTD is the trust domain of the real spire-server that federates
// with arbor's example.org.
const partnerTD = "partner.test"

// TestSpireServerFetchesArborBundleEndpoint: a real spire-server of another
// trust domain, federated with arbor's trust domain through its own
// federation block, fetches arbor's bundle endpoint — with https_spiffe
// (authenticating arbor's server SVID against the bundle it was given once)
// and with https_web (a Web PKI certificate its system roots trust) — and
// ends up holding arbor's X.509 authorities and JWT keys.
func TestSpireServerFetchesArborBundleEndpoint(t *testing.T) {
	forEachSpire(t, func(t *testing.T, p *spirePeer) {
		for _, profile := range []string{"https_spiffe", "https_web"} {
			t.Run(profile, func(t *testing.T) { testSpireFetchesArbor(t, p, profile) })
		}
	})
}

func testSpireFetchesArbor(t *testing.T, p *spirePeer, profile string) {
	dir := t.TempDir()
	port := freePort(t)
	block := fmt.Sprintf("bundle_endpoint {\n    listen = \"127.0.0.1:%d\"\n  }", port)
	var spireEnv []string
	spireProfile := fmt.Sprintf("bundle_endpoint_profile \"https_spiffe\" {\n        endpoint_spiffe_id = \"spiffe://%s/spire/server\"\n      }", td.Name())
	if profile == "https_web" {
		caPEM, certFile, keyFile := writeWebPKI(t, dir)
		block = fmt.Sprintf("bundle_endpoint {\n    listen    = \"127.0.0.1:%d\"\n    profile   = \"https_web\"\n    cert_file = %q\n    key_file  = %q\n  }", port, certFile, keyFile)
		// Go's system roots on Linux honour SSL_CERT_FILE: the test CA is
		// the only root the spire-server trusts.
		spireEnv = []string{"SSL_CERT_FILE=" + caPEM}
		spireProfile = "bundle_endpoint_profile \"https_web\" {}"
	}
	a := newArbor(t, block)
	a.spire = p
	a.start(t)
	_, bundlePEM := a.bundlePEM(t)

	s := startFederatedSpireServer(t, p, dir, spireEnv, fmt.Sprintf(`federation {
    federates_with %q {
      bundle_endpoint_url = "https://127.0.0.1:%d"
      %s
    }
  }`, td.Name(), port, spireProfile))
	if profile == "https_spiffe" {
		// The first contact needs arbor's bundle, given out of band.
		path := filepath.Join(dir, "arbor-bundle.pem")
		if err := os.WriteFile(path, bundlePEM, 0o600); err != nil {
			t.Fatal(err)
		}
		s.mustCLI(t, "bundle", "set", "-format", "pem", "-id", td.ID().String(), "-path", path)
	}
	var want struct {
		Keys []struct {
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(a.cli(t, "bundle", "show", "--format", "spiffe")), &want); err != nil {
		t.Fatalf("arbor bundle show --format spiffe: %v", err)
	}
	wantJWT := 0
	for _, k := range want.Keys {
		if k.Use == "jwt-svid" {
			wantJWT++
		}
	}
	if wantJWT == 0 {
		t.Fatal("arbor's bundle has no JWT key to see crossing the endpoint")
	}
	poll(t, waitTimeout, "spire-server holding arbor's bundle fetched from its endpoint", func() error {
		// Ask for a refresh each time: the first attempt may precede `bundle set`.
		s.cli(t, "federation", "refresh", "-id", td.ID().String())
		out, err := s.cli(t, "bundle", "list", "-id", td.ID().String(), "-format", "spiffe")
		if err != nil {
			return err
		}
		start := strings.Index(out, "{")
		if start < 0 {
			return fmt.Errorf("no bundle yet:\n%s", out)
		}
		var got struct {
			Keys []struct {
				Use string `json:"use"`
			} `json:"keys"`
		}
		if err := json.Unmarshal([]byte(out[start:]), &got); err != nil {
			return fmt.Errorf("bundle list output: %v\n%s", err, out)
		}
		jwt, x5 := 0, 0
		for _, k := range got.Keys {
			switch k.Use {
			case "jwt-svid":
				jwt++
			case "x509-svid":
				x5++
			}
		}
		if jwt != wantJWT || x5 == 0 {
			return fmt.Errorf("spire-server holds %d X.509 and %d JWT keys of %s, want arbor's %d JWT keys (only the endpoint carries them)", x5, jwt, td.Name(), wantJWT)
		}
		return nil
	})
}

// startFederatedSpireServer runs a real spire-server of partnerTD whose
// server block carries federation.
func startFederatedSpireServer(t testing.TB, p *spirePeer, dir string, env []string, federation string) *agentSpireServer {
	t.Helper()
	return startSpireServerOf(t, p, partnerTD, filepath.Join(dir, "spire"), env, federation)
}

// writeWebPKI writes a test CA and a 127.0.0.1 server certificate signed by
// it; it returns the CA file and the certificate and key files.
func writeWebPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e web CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "web-ca.pem"), filepath.Join(dir, "web.pem"), filepath.Join(dir, "web-key.pem")
	for path, block := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}
