package tier_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/tier"
	"github.com/arborid/arbor/topology"
)

// TestFederationBlocksReachTheRoot: every attribute of a topology's
// federation blocks reaches the root server's settings (the root fetches
// federated bundles; the tiers below receive them from their parent, so
// they get none).
func TestFederationBlocksReachTheRoot(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fed.hcl")
	src := `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:7101"
  health_listen = "off"
  ca_ttl        = "48h"
}
server "leaf" {
  parent        = "root"
  listen        = "127.0.0.1:7102"
  health_listen = "off"
}
federation "partner.test" {
  bundle_endpoint    = "https://partner.test:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.test/spire/server"
  bootstrap_bundle   = "partner.pem"
}
federation "web.test" {
  bundle_endpoint = "https://web.test/bundle"
}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatalf("ParseFile: %s", topology.FormatDiagnostics(diags, nil))
	}
	root, err := tier.ServerConfig(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	got := root.Config.Federations
	if len(got) != 2 {
		t.Fatalf("root federations = %+v, want 2", got)
	}
	p := got[0]
	if p.TrustDomain.Name() != "partner.test" || p.BundleEndpointURL != "https://partner.test:8443" || p.Profile != "https_spiffe" ||
		p.EndpointID.String() != "spiffe://partner.test/spire/server" || p.BootstrapBundle != filepath.Join(dir, "partner.pem") {
		t.Errorf("root federation partner.test = %+v, want every attribute of the block (bootstrap_bundle resolved next to the file)", p)
	}
	if w := got[1]; w.TrustDomain.Name() != "web.test" || w.Profile != "https_web" || !w.EndpointID.IsZero() {
		t.Errorf("root federation web.test = %+v, want https_web by default", w)
	}
	leaf, err := tier.ServerConfig(f, "leaf")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(leaf.Config.Federations); n != 0 {
		t.Errorf("leaf federations = %d, want none (it receives the bundles from its parent)", n)
	}
}

// TestFederationReachesTheServerItIsFetchedBy: a federation block with
// fetched_by reaches that server's settings, and no other server's (its
// subtree receives the bundle from it; the root and the tiers beside it do
// not); one without stays with the root.
func TestFederationReachesTheServerItIsFetchedBy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fed.hcl")
	src := `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:7111"
  health_listen = "off"
  ca_ttl        = "96h"
}
server "eu" {
  parent        = "root"
  listen        = "127.0.0.1:7112"
  health_listen = "off"
  ca_ttl        = "48h"
}
server "eu-leaf" {
  parent        = "eu"
  listen        = "127.0.0.1:7113"
  health_listen = "off"
  ca_ttl        = "24h"
}
server "us" {
  parent        = "root"
  listen        = "127.0.0.1:7114"
  health_listen = "off"
  ca_ttl        = "48h"
}
federation "partner.test" {
  bundle_endpoint    = "https://partner.test:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.test/spire/server"
  bootstrap_bundle   = "partner.pem"
  fetched_by         = "eu"
}
federation "web.test" {
  bundle_endpoint = "https://web.test/bundle"
}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatalf("ParseFile: %s", topology.FormatDiagnostics(diags, nil))
	}
	want := map[string]string{"root": "web.test", "eu": "partner.test", "eu-leaf": "", "us": ""}
	for node, wantTD := range want {
		s, err := tier.ServerConfig(f, node)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, fed := range s.Config.Federations {
			got = append(got, fed.TrustDomain.Name())
		}
		if strings.Join(got, ",") != wantTD {
			t.Errorf("ServerConfig(%s).Federations = %v, want [%s]", node, got, wantTD)
		}
		if node != "eu" || len(s.Config.Federations) != 1 {
			continue
		}
		p := s.Config.Federations[0]
		if p.BundleEndpointURL != "https://partner.test:8443" || p.Profile != "https_spiffe" ||
			p.EndpointID.String() != "spiffe://partner.test/spire/server" || p.BootstrapBundle != filepath.Join(dir, "partner.pem") {
			t.Errorf("eu's federation partner.test = %+v, want every attribute of the block", p)
		}
	}
}
