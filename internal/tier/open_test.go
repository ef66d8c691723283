package tier

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/topology"
)

// TestOpenDiskUpstream: a root with upstream "disk" runs a CA signed by the
// enterprise CA on disk, and its bundle trusts that CA.
func TestOpenDiskUpstream(t *testing.T) {
	dir, err := os.MkdirTemp("", "arl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Enterprise Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	src := fmt.Sprintf(`trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:0"
  health_listen = "off"
  state_dir     = %q
  upstream "disk" {
    cert_file_path = "ca.pem"
    key_file_path  = "ca.key"
  }
}
`, filepath.Join(dir, "state"))
	path := filepath.Join(dir, "t.hcl")
	os.WriteFile(path, []byte(src), 0o600)
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatal(topology.FormatDiagnostics(diags, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := ServerConfig(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	cfg, closer, err := tr.Open(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := srv.CA().X509CA()
	if caCert.Issuer.CommonName != "Enterprise Root" {
		t.Errorf("tier CA issued by %q, want the enterprise root", caCert.Issuer.CommonName)
	}
	roots := srv.Bundles().X509Bundle().X509Authorities()
	if len(roots) != 1 || !roots[0].Equal(mustParse(t, der)) {
		t.Errorf("bundle roots = %d certificates, want only the enterprise root", len(roots))
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
