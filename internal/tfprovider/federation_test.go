package tfprovider

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
)

// relationship returns the server's relationship with td, nil when none.
func (s *testServer) relationship(t *testing.T, td string) *types.FederationRelationship {
	t.Helper()
	rs, err := s.admin.Relationships(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.TrustDomain == td {
			return r
		}
	}
	return nil
}

// A relationship is created, updated in place (URL and profile, with a
// bootstrap bundle the server then holds and arbor_bundle reads back),
// imported by trust domain, and deleted.
func TestFederationRelationship(t *testing.T) {
	s := startServer(t)
	ca, err := x509poptest.NewRootCA(x509poptest.CAOptions{CommonName: "partner root"})
	if err != nil {
		t.Fatal(err)
	}
	partnerPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
	web := s.config(`
resource "arbor_federation_relationship" "p" {
  trust_domain            = "partner.org"
  bundle_endpoint_url     = "https://partner.example:8443/bundle"
  bundle_endpoint_profile = "https_web"
}
`)
	spiffe := s.config(fmt.Sprintf(`
resource "arbor_federation_relationship" "p" {
  trust_domain            = "partner.org"
  bundle_endpoint_url     = "https://spire.partner.example:8443"
  bundle_endpoint_profile = "https_spiffe"
  endpoint_spiffe_id      = "spiffe://partner.org/spire/server"
  trust_domain_bundle     = %q
}

data "arbor_bundle" "partner" {
  trust_domain = arbor_federation_relationship.p.trust_domain
}
`, partnerPEM))
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: web,
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("arbor_federation_relationship.p", "id", "partner.org"),
					func(*terraform.State) error {
						r := s.relationship(t, "partner.org")
						if r == nil || r.BundleEndpointUrl != "https://partner.example:8443/bundle" || r.GetHttpsWeb() == nil {
							return fmt.Errorf("server holds %v, want the https_web relationship", r)
						}
						return nil
					},
				),
			},
			{
				Config: spiffe,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("arbor_federation_relationship.p", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("data.arbor_bundle.partner", "x509_authorities_count", "1"),
					resource.TestCheckResourceAttr("data.arbor_bundle.partner", "pem", partnerPEM),
					func(*terraform.State) error {
						r := s.relationship(t, "partner.org")
						if r == nil || r.BundleEndpointUrl != "https://spire.partner.example:8443" ||
							r.GetHttpsSpiffe().GetEndpointSpiffeId() != "spiffe://partner.org/spire/server" {
							return fmt.Errorf("server holds %v, want the https_spiffe relationship", r)
						}
						b, err := s.admin.FederatedBundle(ctxT(t), spiffeid.RequireTrustDomainFromString("partner.org"))
						if err != nil || len(b.X509Authorities) != 1 {
							return fmt.Errorf("partner.org bundle = %v, %v; want the bootstrap root", b, err)
						}
						return nil
					},
				),
			},
			{
				Config:   spiffe,
				PlanOnly: true,
			},
			{
				ResourceName:            "arbor_federation_relationship.p",
				ImportState:             true,
				ImportStateId:           "partner.org",
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"trust_domain_bundle"}, // write-only: never read back
				Config:                  spiffe,
			},
		},
		CheckDestroy: func(*terraform.State) error {
			if r := s.relationship(t, "partner.org"); r != nil {
				return fmt.Errorf("relationship %v left after destroy", r)
			}
			return nil
		},
	})
}

// arbor_bundle reads the server's own bundle: PEM certificates that are
// the server's roots, and the SPIFFE bundle document with its keys.
func TestBundleDataSource(t *testing.T) {
	s := startServer(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: s.config(`data "arbor_bundle" "own" {}`),
			Check: func(st *terraform.State) error {
				rs := st.RootModule().Resources["data.arbor_bundle.own"]
				if rs == nil {
					return fmt.Errorf("no data.arbor_bundle.own")
				}
				a := rs.Primary.Attributes
				want := s.bundlePEM(t)
				if a["pem"] != want {
					return fmt.Errorf("pem = %q, want the server's roots %q", a["pem"], want)
				}
				rest := []byte(a["pem"])
				n := 0
				for {
					var block *pem.Block
					if block, rest = pem.Decode(rest); block == nil {
						break
					}
					cert, err := x509.ParseCertificate(block.Bytes)
					if err != nil || !cert.IsCA {
						return fmt.Errorf("pem holds a certificate that is not a CA: %v", err)
					}
					n++
				}
				if n == 0 || a["x509_authorities_count"] != fmt.Sprint(n) {
					return fmt.Errorf("pem holds %d certificates, x509_authorities_count = %s", n, a["x509_authorities_count"])
				}
				if a["jwt_authorities_count"] == "0" || !strings.Contains(a["jwks"], `"x509-svid"`) ||
					!strings.Contains(a["jwks"], `"jwt-svid"`) || !strings.Contains(a["jwks"], "spiffe_sequence") {
					return fmt.Errorf("jwks = %s, jwt_authorities_count = %s", a["jwks"], a["jwt_authorities_count"])
				}
				return nil
			},
		}},
	})
}

// An admin socket with no server behind it fails with one line naming it.
func TestUnreachableSocket(t *testing.T) {
	sock := "/nonexistent/arbor/admin.sock"
	// The whole message on the Error line, with no detail after it.
	const oneLine = `(?m)^Error: cannot reach the server: admin socket /nonexistent/arbor/admin.sock does not exist \(is the server running\?\)\n\n  with `
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config:      providerBlock(fmt.Sprintf("admin_socket = %q", sock)) + `data "arbor_bundle" "own" {}`,
				ExpectError: regexpOf(oneLine),
			},
			{
				Config: providerBlock(fmt.Sprintf("admin_socket = %q", sock)) + `
resource "arbor_entry" "x" {
  spiffe_id = "spiffe://example.org/x"
  parent_id = "spiffe://example.org/node"
  selectors = ["unix:uid:1"]
}`,
				ExpectError: regexpOf(oneLine),
			},
		},
	})
}
