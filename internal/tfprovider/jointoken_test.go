package tfprovider

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/testkit"
)

// attest runs join-token attestation over the admin socket (AttestAgent is
// open to anyone) and returns the agent's SPIFFE ID: the token is used.
func (s *testServer) attest(t *testing.T, token string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := agentv1.NewAgentClient(s.admin.Conn()).AttestAgent(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("AttestAgent with the token: %v", err)
	}
	id := resp.GetResult().GetSvid().GetId()
	return "spiffe://" + id.GetTrustDomain() + id.GetPath()
}

// stateAttr returns attribute name of addr in st.
func stateAttr(st *terraform.State, addr, name string) (string, error) {
	rs, ok := st.RootModule().Resources[addr]
	if !ok {
		return "", fmt.Errorf("no %s in state", addr)
	}
	return rs.Primary.Attributes[name], nil
}

const joinTokenConfig = `
resource "arbor_join_token" "t" {
  spiffe_id = "spiffe://example.org/agent/a"
  ttl       = "10m"
}
`

// A join token is sensitive (unknown and marked sensitive in the plan; its
// ID is a digest, not the token), is a token the server accepts, and once
// an agent has used it the next plan makes a new one.
func TestJoinTokenUsedIsReplaced(t *testing.T) {
	s := startServer(t)
	var token string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: s.config(joinTokenConfig),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectSensitiveValue("arbor_join_token.t", tfjsonpath.New("token")),
					plancheck.ExpectUnknownValue("arbor_join_token.t", tfjsonpath.New("token")),
				}},
				Check: func(st *terraform.State) error {
					var err error
					if token, err = stateAttr(st, "arbor_join_token.t", "token"); err != nil {
						return err
					}
					id, _ := stateAttr(st, "arbor_join_token.t", "id")
					if token == "" || id != tokenID(token) || strings.Contains(id, token) || len(id) != len("sha256:")+16 {
						return fmt.Errorf("id %q for token %q: want sha256: and 16 hex digits of its digest", id, token)
					}
					if exp, _ := stateAttr(st, "arbor_join_token.t", "expires_at"); exp == "" {
						return fmt.Errorf("no expires_at")
					}
					return nil
				},
			},
			{
				// Unused: nothing to do.
				Config:   s.config(joinTokenConfig),
				PlanOnly: true,
			},
			{
				PreConfig: func() {
					if got := s.attest(t, token); got != "spiffe://example.org/spire/agent/join_token/"+token {
						t.Fatalf("attested as %s", got)
					}
				},
				Config: s.config(joinTokenConfig),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("arbor_join_token.t", plancheck.ResourceActionCreate),
					plancheck.ExpectSensitiveValue("arbor_join_token.t", tfjsonpath.New("token")),
				}},
				Check: func(st *terraform.State) error {
					next, err := stateAttr(st, "arbor_join_token.t", "token")
					if err != nil {
						return err
					}
					if next == "" || next == token {
						return fmt.Errorf("token after use = %q, want a new one (was %q)", next, token)
					}
					// The new token's alias entry names the agent.
					if got := s.attest(t, next); got != "spiffe://example.org/spire/agent/join_token/"+next {
						return fmt.Errorf("new token attested as %s", got)
					}
					return nil
				},
				ExpectNonEmptyPlan: true, // the new token was used by the check above
			},
		},
	})
}

// An expired token is dropped at refresh, and the next apply makes a new one.
func TestJoinTokenExpiredIsReplaced(t *testing.T) {
	s := startServer(t)
	// Long enough for the plans right after each apply to find it unexpired.
	config := s.config(`resource "arbor_join_token" "t" { ttl = "5s" }`)
	var token, expires string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: func(st *terraform.State) error {
					token, _ = stateAttr(st, "arbor_join_token.t", "token")
					expires, _ = stateAttr(st, "arbor_join_token.t", "expires_at")
					return nil
				},
			},
			{
				PreConfig: func() {
					exp, err := time.Parse(time.RFC3339, expires)
					if err != nil {
						t.Fatalf("expires_at %q: %v", expires, err)
					}
					testkit.Poll(t, 10*time.Second, "the token's expiry", func() error {
						if time.Now().Before(exp) {
							return fmt.Errorf("not expired until %v", exp)
						}
						return nil
					})
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("arbor_join_token.t", plancheck.ResourceActionCreate),
				}},
				Check: func(st *terraform.State) error {
					if next, _ := stateAttr(st, "arbor_join_token.t", "token"); next == "" || next == token {
						return fmt.Errorf("token after expiry = %q, want a new one (was %q)", next, token)
					}
					return nil
				},
			},
		},
	})
}
