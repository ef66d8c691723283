package tfprovider

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/ca"
)

// adminFiles writes an X509-SVID for id signed by the server's CA, its
// key and the server's bundle, as the provider's cert_file, key_file and
// bundle_file.
func (s *testServer) adminFiles(t *testing.T, id spiffeid.ID) (cert, key, bundle string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := s.CA().SignX509SVID(ctxT(t), ca.X509SVIDParams{ID: id, PublicKey: k.Public()})
	if err != nil {
		t.Fatalf("SignX509SVID(%s): %v", id, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var certPEM []byte
	for _, c := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	cert, key, bundle = filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"), filepath.Join(dir, "bundle.pem")
	for path, data := range map[string][]byte{
		cert:   certPEM,
		key:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		bundle: []byte(s.bundlePEM(t)),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, bundle
}

// Over TCP with an admin X509-SVID (admin.DialTLS), the provider manages
// entries as over the admin socket; an SVID with no admin entry is
// refused in one line.
func TestProviderOverTCP(t *testing.T) {
	s := startServer(t)
	adminID := spiffeid.RequireFromString("spiffe://example.org/ops/admin")
	if _, err := s.admin.CreateEntry(ctxT(t), &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: adminID.Path()},
		ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: "/node/ops"},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:2"}},
		Admin:     true,
	}); err != nil {
		t.Fatal(err)
	}
	cert, key, bundle := s.adminFiles(t, adminID)
	tcp := func(cert, key string) string {
		return providerBlock(fmt.Sprintf("address = %q\n  cert_file = %q\n  key_file = %q\n  bundle_file = %q",
			s.AgentAddr().String(), cert, key, bundle))
	}
	otherCert, otherKey, _ := s.adminFiles(t, spiffeid.RequireFromString("spiffe://example.org/not-admin"))
	entry := `
resource "arbor_entry" "x" {
  spiffe_id = "spiffe://example.org/over-tcp"
  parent_id = "spiffe://example.org/node/a"
  selectors = ["unix:uid:7"]
}

data "arbor_bundle" "own" {}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config:      tcp(otherCert, otherKey) + entry,
				ExpectError: regexpOf(`(?m)^Error: entry create: spiffe://example.org/not-admin is not authorized for this call \(needs admin\) \(PermissionDenied\)\n`),
			},
			{
				Config: tcp(cert, key) + entry,
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttrWith("data.arbor_bundle.own", "pem", func(got string) error {
						if want := s.bundlePEM(t); got != want {
							return fmt.Errorf("pem over TCP = %q, want %q", got, want)
						}
						return nil
					}),
					func(st *terraform.State) error {
						if e := s.entryOf(t, st, "arbor_entry.x"); idString(e.SpiffeId) != "spiffe://example.org/over-tcp" {
							return fmt.Errorf("server holds %v", e)
						}
						return nil
					},
				),
			},
		},
	})
}

// A server address nothing listens on fails the first call in one line
// naming that address (not an "admin socket").
func TestProviderOverTCPUnreachable(t *testing.T) {
	s := startServer(t)
	cert, key, bundle := s.adminFiles(t, spiffeid.RequireFromString("spiffe://example.org/ops/admin"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := providerBlock(fmt.Sprintf("address = %q\n  cert_file = %q\n  key_file = %q\n  bundle_file = %q", addr, cert, key, bundle)) + `
data "arbor_bundle" "own" {}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config:      cfg,
			ExpectError: regexpOf(`(?m)^Error: bundle show: cannot reach the server on server address ` + regexp.QuoteMeta(addr) + ` \(.+\)\n`),
		}},
	})
}
