package x509pop_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
)

// TestFilesRoundTrip attests from PEM files written by x509poptest, as an
// agent and a server configured with certificate_path, private_key_path and
// ca_bundle_path would.
func TestFilesRoundTrip(t *testing.T) {
	for _, kt := range []x509poptest.KeyType{x509poptest.ECP256, x509poptest.RSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			ctx := testContext(t)
			pki := must(x509poptest.Generate(t.TempDir(), x509poptest.GenerateOptions{
				CA:           x509poptest.CAOptions{NotBefore: notBefore, NotAfter: notAfter},
				Node:         x509poptest.NodeOptions{KeyType: kt},
				Intermediate: true,
			}))
			certs, key, err := x509pop.LoadIdentity(pki.CertPath, pki.KeyPath, "")
			if err != nil {
				t.Fatalf("LoadIdentity() = %v", err)
			}
			if len(certs) != 2 || !certs[0].Equal(pki.Node.Leaf()) {
				t.Fatalf("LoadIdentity() chain has %d certificates, want the leaf and the intermediate", len(certs))
			}
			roots, err := x509pop.LoadCertificates(pki.CABundlePath)
			if err != nil {
				t.Fatalf("LoadCertificates(%s) = %v", pki.CABundlePath, err)
			}
			if len(roots) != 1 || !roots[0].Equal(pki.Root.Cert) {
				t.Fatalf("LoadCertificates(%s) = %d certificates, want the root", pki.CABundlePath, len(roots))
			}
			a := newAttestor(t, roots, "")
			res, err := a.Attest(ctx, must(x509pop.AttestationPayload(certs)), func(_ context.Context, c []byte) ([]byte, error) {
				return x509pop.ChallengeResponse(key, c, nil)
			})
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if want := "/spire/agent/x509pop/" + fingerprint(pki.Node.Leaf()); res.AgentID.Path() != want {
				t.Errorf("agent ID path = %q, want %q", res.AgentID.Path(), want)
			}
		})
	}
}

func TestLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	root := newRoot(t)
	inter := must(root.NewIntermediate("intermediate"))
	ecNode := must(inter.NewNode(x509poptest.NodeOptions{}))
	rsaNode := must(inter.NewNode(x509poptest.NodeOptions{KeyType: x509poptest.RSA2048}))

	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leafOnly := write("leaf.pem", x509poptest.EncodeCertificates(ecNode.Leaf()))
	interPath := write("inter.pem", x509poptest.EncodeCertificates(inter.Cert))
	pkcs8 := write("ec-pkcs8.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(ecNode.Key))}))
	sec1 := write("ec-sec1.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: must(x509.MarshalECPrivateKey(ecNode.Key.(*ecdsa.PrivateKey)))}))
	rsaLeaf := write("rsa.pem", x509poptest.EncodeCertificates(rsaNode.Chain...))
	pkcs1 := write("rsa-pkcs1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaNode.Key.(*rsa.PrivateKey))}))
	noPEM := write("empty.pem", []byte("not pem"))

	tests := []struct {
		name             string
		cert, key, inter string
		wantChain        int
		wantErr          bool
	}{
		{name: "intermediates file", cert: leafOnly, key: pkcs8, inter: interPath, wantChain: 2},
		{name: "SEC 1 key", cert: leafOnly, key: sec1, wantChain: 1},
		{name: "PKCS#1 key", cert: rsaLeaf, key: pkcs1, wantChain: 2},
		{name: "key does not match", cert: leafOnly, key: pkcs1, wantErr: true},
		{name: "no certificate", cert: noPEM, key: pkcs8, wantErr: true},
		{name: "no key", cert: leafOnly, key: noPEM, wantErr: true},
		{name: "missing file", cert: filepath.Join(dir, "missing.pem"), key: pkcs8, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, key, err := x509pop.LoadIdentity(tt.cert, tt.key, tt.inter)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("LoadIdentity(%s, %s, %q) = nil error, want error", tt.cert, tt.key, tt.inter)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadIdentity(%s, %s, %q) = %v", tt.cert, tt.key, tt.inter, err)
			}
			if len(certs) != tt.wantChain {
				t.Errorf("LoadIdentity() chain length = %d, want %d", len(certs), tt.wantChain)
			}
			if key == nil {
				t.Error("LoadIdentity() key = nil")
			}
		})
	}
}
