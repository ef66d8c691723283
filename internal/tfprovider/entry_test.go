package tfprovider

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/cli/admin"
)

const entryConfig = `
resource "arbor_entry" "web" {
  spiffe_id     = "spiffe://example.org/web"
  parent_id     = "spiffe://example.org/node/a"
  selectors     = ["unix:uid:1000", "unix:gid:50"]
  x509_svid_ttl = %q
  jwt_svid_ttl  = "1d"
  dns_names     = ["web.example.org"]
  hint          = "web"
  expires_at    = "2040-01-02T03:04:05Z"
}
`

// entryOf returns the entry with the ID held in state for addr.
func (s *testServer) entryOf(t *testing.T, st *terraform.State, addr string) *types.Entry {
	t.Helper()
	rs, ok := st.RootModule().Resources[addr]
	if !ok {
		t.Fatalf("no %s in state", addr)
	}
	e, err := entryv1.NewEntryClient(s.admin.Conn()).GetEntry(ctxT(t), &entryv1.GetEntryRequest{Id: rs.Primary.ID})
	if err != nil {
		t.Fatalf("GetEntry(%s): %v", rs.Primary.ID, err)
	}
	return e
}

// An entry is created, read back with no diff, updated in place (same ID,
// only the changed field and the revision differ on the server), imported,
// recreated when deleted behind tofu's back, and gone after destroy.
func TestEntryLifecycle(t *testing.T) {
	s := startServer(t)
	var first *types.Entry
	var id string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config: s.config(fmt.Sprintf(entryConfig, "1h")),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("arbor_entry.web", "spiffe_id", "spiffe://example.org/web"),
					resource.TestCheckResourceAttr("arbor_entry.web", "x509_svid_ttl", "1h"),
					resource.TestCheckResourceAttr("arbor_entry.web", "admin", "false"),
					resource.TestCheckResourceAttrSet("arbor_entry.web", "created_at"),
					func(st *terraform.State) error {
						first = s.entryOf(t, st, "arbor_entry.web")
						id = first.Id
						if first.X509SvidTtl != 3600 || first.JwtSvidTtl != 86400 || first.Hint != "web" || len(first.Selectors) != 2 ||
							first.ExpiresAt == 0 || len(first.DnsNames) != 1 {
							return fmt.Errorf("server holds %v, want the configured entry", first)
						}
						return nil
					},
				),
			},
			{
				// "1h" and the server's 3600 are the same: no diff.
				Config:   s.config(fmt.Sprintf(entryConfig, "1h")),
				PlanOnly: true,
			},
			{
				Config: s.config(fmt.Sprintf(entryConfig, "2h")),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("arbor_entry.web", plancheck.ResourceActionUpdate),
				}},
				Check: func(st *terraform.State) error {
					e := s.entryOf(t, st, "arbor_entry.web")
					if e.Id != id {
						return fmt.Errorf("entry ID changed from %s to %s on an in-place update", id, e.Id)
					}
					if e.X509SvidTtl != 7200 {
						return fmt.Errorf("x509_svid_ttl on the server = %d, want 7200", e.X509SvidTtl)
					}
					if e.RevisionNumber == first.RevisionNumber {
						return fmt.Errorf("revision did not change on update")
					}
					// Every other field is what it was.
					want := cloneEntry(first)
					want.X509SvidTtl = 7200
					if m := entryDiff(e, want); m != nil {
						return fmt.Errorf("update changed more than x509_svid_ttl: %v", m)
					}
					return nil
				},
			},
			{
				ResourceName:      "arbor_entry.web",
				ImportState:       true,
				ImportStateVerify: true,
				Config:            s.config(fmt.Sprintf(entryConfig, "2h")),
			},
			{
				// Deleted behind tofu's back: the refresh drops it, the apply recreates it.
				PreConfig: func() {
					resp, err := entryv1.NewEntryClient(s.admin.Conn()).BatchDeleteEntry(ctxT(t), &entryv1.BatchDeleteEntryRequest{Ids: []string{id}})
					if err != nil || resp.Results[0].Status.Code != 0 {
						t.Fatalf("BatchDeleteEntry(%s) = %v, %v", id, resp, err)
					}
				},
				Config: s.config(fmt.Sprintf(entryConfig, "2h")),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("arbor_entry.web", plancheck.ResourceActionCreate),
				}},
				Check: func(st *terraform.State) error {
					e := s.entryOf(t, st, "arbor_entry.web")
					if e.Id == id {
						return fmt.Errorf("entry %s was not recreated", id)
					}
					id = e.Id
					return nil
				},
			},
			{
				Config: s.config(fmt.Sprintf(entryConfig, "2h")),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
		},
		CheckDestroy: func(*terraform.State) error {
			es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{})
			if err != nil {
				return err
			}
			if len(es) != 0 {
				return fmt.Errorf("after destroy the server holds %d entries: %v", len(es), es)
			}
			return nil
		},
	})
}

// Values the server would refuse fail the plan, at their attribute, before
// anything reaches the server.
func TestEntryPlanTimeValidation(t *testing.T) {
	s := startServer(t)
	cases := []struct {
		name, attrs string
		want        string
	}{
		{"bad SPIFFE ID", `spiffe_id = "http://example.org/web"`, `invalid SPIFFE ID`},
		{"reserved SPIFFE ID", `spiffe_id = "spiffe://example.org/spire/x"`, `reserved`},
		{"empty parent path", `parent_id = "spiffe://example.org"`, `invalid SPIFFE ID`},
		{"bad selector", `selectors = ["unix"]`, `invalid selector`},
		{"bad duration", `x509_svid_ttl = "1 hour"`, `invalid duration`},
		{"fractional duration", `jwt_svid_ttl = "1.5s"`, `not whole seconds`},
		{"bad expiry", `expires_at = "tomorrow"`, `invalid timestamp`},
		{"bad trust domain", `federates_with = ["spiffe://other.org"]`, `invalid trust domain`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[string]string{
				"spiffe_id": `"spiffe://example.org/web"`,
				"parent_id": `"spiffe://example.org/node/a"`,
				"selectors": `["unix:uid:1"]`,
			}
			k, v, _ := strings.Cut(tc.attrs, " = ")
			attrs[k] = v
			var b strings.Builder
			b.WriteString("resource \"arbor_entry\" \"x\" {\n")
			for k, v := range attrs {
				fmt.Fprintf(&b, "  %s = %s\n", k, v)
			}
			b.WriteString("}\n")
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: factories,
				Steps: []resource.TestStep{{
					Config:      s.config(b.String()),
					PlanOnly:    true,
					ExpectError: regexp.MustCompile(tc.want),
				}},
			})
		})
	}
	if es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{}); err != nil || len(es) != 0 {
		t.Errorf("after refused plans the server holds %d entries (%v), want 0", len(es), err)
	}
}

// Creating an entry the server already holds (same SPIFFE ID, parent and
// selectors, made by hand) adopts it: same ID, updated to the
// configuration, no error.
func TestEntryAdoptsExisting(t *testing.T) {
	s := startServer(t)
	had, err := s.admin.CreateEntry(ctxT(t), &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: "/web"},
		ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: "/node/a"},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:1000"}, {Type: "unix", Value: "gid:50"}},
		Hint:      "by hand",
	})
	if err != nil {
		t.Fatal(err)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: s.config(fmt.Sprintf(entryConfig, "1h")),
			Check: func(st *terraform.State) error {
				e := s.entryOf(t, st, "arbor_entry.web")
				if e.Id != had.Id {
					return fmt.Errorf("entry ID %s, want the existing entry's %s", e.Id, had.Id)
				}
				if e.Hint != "web" || e.X509SvidTtl != 3600 {
					return fmt.Errorf("adopted entry %v was not updated to the configuration", e)
				}
				return nil
			},
		}},
	})
}
