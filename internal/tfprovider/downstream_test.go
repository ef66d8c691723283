package tfprovider

import (
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
)

// bundlePEM is the server's own X.509 roots as PEM.
func (s *testServer) bundlePEM(t *testing.T) string {
	t.Helper()
	b, err := s.admin.Bundle(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	out, err := admin.MarshalBundle(b, admin.BundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// rotateCA prepares a new X.509 authority and activates it, as an operator
// forcing a rotation does: the bundle gains the new root.
func (s *testServer) rotateCA(t *testing.T) {
	t.Helper()
	la := localauthorityv1.NewLocalAuthorityClient(s.admin.Conn())
	p, err := la.PrepareX509Authority(ctxT(t), &localauthorityv1.PrepareX509AuthorityRequest{})
	if err != nil {
		t.Fatalf("PrepareX509Authority: %v", err)
	}
	if _, err := la.ActivateX509Authority(ctxT(t), &localauthorityv1.ActivateX509AuthorityRequest{
		AuthorityId: p.PreparedAuthority.AuthorityId}); err != nil {
		t.Fatalf("ActivateX509Authority: %v", err)
	}
}

// A child tier registered with a join token and one with x509pop: the
// downstream entries are what topology apply makes, the join token
// attests, and neither its use nor a CA rotation at the parent is a diff.
func TestDownstream(t *testing.T) {
	s := startServer(t)
	ca, err := x509poptest.NewRootCA(x509poptest.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.NewNode(x509poptest.NodeOptions{CommonName: "child2"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: node.Leaf().Raw}))
	wantX509PoPAgent := "spiffe://example.org/spire/agent/x509pop/" + x509pop.Fingerprint(node.Leaf())
	config := s.config(fmt.Sprintf(`
resource "arbor_downstream" "child" {
  spiffe_id = "spiffe://example.org/arbor/server/child"
  agent_id  = "spiffe://example.org/arbor/agent/child"
  selectors = ["unix:uid:4242"]
}

resource "arbor_downstream" "child2" {
  spiffe_id           = "spiffe://example.org/arbor/server/child2"
  bootstrap           = "x509pop"
  x509pop_certificate = %q
}
`, certPEM))
	var token, bundleAtCreate string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					// The x509pop agent's ID is known at plan time.
					plancheck.ExpectKnownValue("arbor_downstream.child2", tfjsonpathOf("agent_id"), knownString(wantX509PoPAgent)),
				}},
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("arbor_downstream.child", "bootstrap", "join_token"),
					resource.TestCheckResourceAttr("arbor_downstream.child2", "agent_id", wantX509PoPAgent),
					resource.TestCheckResourceAttr("arbor_downstream.child2", "join_token", ""),
					resource.TestCheckResourceAttrPair("arbor_downstream.child", "id", "arbor_downstream.child", "entry_id"),
					func(st *terraform.State) error {
						bundleAtCreate = s.bundlePEM(t)
						for addr, want := range map[string][3]string{
							"arbor_downstream.child":  {"spiffe://example.org/arbor/server/child", "spiffe://example.org/arbor/agent/child", "unix:uid:4242"},
							"arbor_downstream.child2": {"spiffe://example.org/arbor/server/child2", wantX509PoPAgent, fmt.Sprintf("unix:uid:%d", uid())},
						} {
							e := s.entryOf(t, st, addr)
							if !e.Downstream || idString(e.SpiffeId) != want[0] || idString(e.ParentId) != want[1] ||
								!slices.Equal(selectorStrings(e.Selectors), []string{want[2]}) {
								return fmt.Errorf("%s: server holds %v, want downstream %s <- %s [%s]", addr, e, want[0], want[1], want[2])
							}
							if got, _ := stateAttr(st, addr, "bootstrap_bundle"); got != bundleAtCreate {
								return fmt.Errorf("%s: bootstrap_bundle is not the server's roots:\n%s", addr, got)
							}
						}
						token, _ = stateAttr(st, "arbor_downstream.child", "join_token")
						if token == "" {
							return fmt.Errorf("no join token for child")
						}
						return nil
					},
				),
			},
			{
				// The child's agent attests with its token: the alias
				// names it agent_id, and the used token is no diff.
				PreConfig: func() {
					s.attest(t, token)
					e, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{ParentID: "spiffe://example.org/spire/agent/join_token/" + token})
					if err != nil || len(e) != 1 || idString(e[0].SpiffeId) != "spiffe://example.org/arbor/agent/child" {
						t.Fatalf("alias entry of the token = %v, %v", e, err)
					}
				},
				Config:           config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
			{
				// A forced CA rotation adds a root to the bundle; the
				// bootstrap bundle stays what it was, with no diff.
				PreConfig: func() {
					s.rotateCA(t)
					if s.bundlePEM(t) == bundleAtCreate {
						t.Fatal("the rotation did not change the bundle")
					}
				},
				Config:           config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
				Check:            resource.TestCheckResourceAttrWith("arbor_downstream.child", "bootstrap_bundle", equals(&bundleAtCreate)),
			},
			{
				// The downstream entry deleted behind tofu's back is
				// registered again, with the parent's roots of now.
				PreConfig: func() {
					es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{SPIFFEID: "spiffe://example.org/arbor/server/child2"})
					if err != nil || len(es) != 1 {
						t.Fatalf("child2's entry = %v, %v", es, err)
					}
					if _, err := s.deleteEntries(t, es[0].Id); err != nil {
						t.Fatal(err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("arbor_downstream.child2", plancheck.ResourceActionCreate),
					plancheck.ExpectResourceAction("arbor_downstream.child", plancheck.ResourceActionNoop),
				}},
				Check: func(st *terraform.State) error {
					if e := s.entryOf(t, st, "arbor_downstream.child2"); !e.Downstream || idString(e.ParentId) != wantX509PoPAgent {
						return fmt.Errorf("child2 registered again as %v", e)
					}
					if got, _ := stateAttr(st, "arbor_downstream.child2", "bootstrap_bundle"); got != s.bundlePEM(t) || got == bundleAtCreate {
						return fmt.Errorf("child2's new bootstrap_bundle is not the rotated bundle")
					}
					return nil
				},
			},
		},
		CheckDestroy: func(*terraform.State) error {
			es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{})
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Downstream {
					return fmt.Errorf("downstream entry %s left after destroy", idString(e.SpiffeId))
				}
				// The join-token agent's alias entry goes with it.
				if strings.HasPrefix(e.ParentId.Path, "/spire/agent/join_token/") {
					return fmt.Errorf("alias entry %s of a join-token agent left after destroy", idString(e.SpiffeId))
				}
			}
			// And the agent that attested with the token is evicted.
			agents, err := s.admin.ListAgents(ctxT(t), admin.AgentFilter{})
			if err != nil {
				return err
			}
			for _, a := range agents {
				if strings.HasPrefix(a.Id.Path, "/spire/agent/join_token/") {
					return fmt.Errorf("join-token agent %s still attested after destroy", idString(a.Id))
				}
			}
			return nil
		},
	})
}

// A join_token downstream without agent_id is refused at plan time.
func TestDownstreamJoinTokenNeedsAgentID(t *testing.T) {
	s := startServer(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config:      s.config(`resource "arbor_downstream" "c" { spiffe_id = "spiffe://example.org/arbor/server/c" }`),
			PlanOnly:    true,
			ExpectError: regexpOf(`missing agent_id`),
		}},
	})
}
