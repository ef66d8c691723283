package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpireFederationCLIAgainstArbor: the real `spire-server federation
// create|list|show|update|refresh|delete` works against arbor's admin socket,
// and `federation refresh` makes arbor fetch a real spire-server's bundle
// endpoint (https_spiffe, authenticated with the bundle given at create):
// arbor then holds the partner's JWT keys, which only the endpoint carries. A
// refresh that fails keeps the bundle; a plain-HTTP endpoint URL is refused.
func TestSpireFederationCLIAgainstArbor(t *testing.T) {
	forEachSpire(t, func(t *testing.T, p *spirePeer) {
		dir := t.TempDir()
		port := freePort(t)
		partner := startSpireServerOf(t, p, partnerTD, filepath.Join(dir, "partner"), nil, fmt.Sprintf(`federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port    = %d
    }
  }`, port))
		partnerPEM := filepath.Join(dir, "partner.pem")
		if err := os.WriteFile(partnerPEM, []byte(partner.mustCLI(t, "bundle", "show")), 0o600); err != nil {
			t.Fatal(err)
		}
		a := newArbor(t, "")
		a.spire = p
		a.start(t)

		url := fmt.Sprintf("https://127.0.0.1:%d", port)
		endpointID := "spiffe://" + partnerTD + "/spire/server"
		if r := a.cliRun(t, "federation", "create", "-trustDomain", partnerTD, "-bundleEndpointURL", "http://127.0.0.1:1",
			"-bundleEndpointProfile", "https_web"); r.err == nil {
			t.Errorf("federation create with a plain-HTTP endpoint succeeded:\n%s", r.stdout)
		}
		a.cli(t, "federation", "create", "-trustDomain", partnerTD, "-bundleEndpointURL", url,
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", endpointID,
			"-trustDomainBundlePath", partnerPEM, "-trustDomainBundleFormat", "pem")
		if out := a.cli(t, "federation", "list"); !strings.Contains(out, partnerTD) || !strings.Contains(out, url) {
			t.Errorf("federation list does not show the relationship:\n%s", out)
		}
		if out := a.cli(t, "federation", "show", "-trustDomain", partnerTD); !strings.Contains(out, endpointID) {
			t.Errorf("federation show does not show the endpoint ID:\n%s", out)
		}
		if n := jwtKeysHeld(t, a, partnerTD); n != 0 {
			t.Fatalf("before any refresh arbor holds %d JWT keys of %s, want 0 (the PEM bundle has none)", n, partnerTD)
		}
		a.cli(t, "federation", "refresh", "-id", "spiffe://"+partnerTD)
		held := jwtKeysHeld(t, a, partnerTD)
		if held == 0 {
			t.Fatalf("after federation refresh arbor holds no JWT key of %s: the bundle was not fetched from its endpoint", partnerTD)
		}

		// An endpoint moved to where nothing answers: the refresh fails and
		// the bundle stays.
		gone := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
		a.cli(t, "federation", "update", "-trustDomain", partnerTD, "-bundleEndpointURL", gone,
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", endpointID)
		if out := a.cli(t, "federation", "show", "-trustDomain", partnerTD); !strings.Contains(out, gone) {
			t.Errorf("federation show after update does not show the new URL %s:\n%s", gone, out)
		}
		if r := a.cliRun(t, "federation", "refresh", "-id", "spiffe://"+partnerTD); r.err == nil {
			t.Error("federation refresh of an endpoint nobody serves succeeded")
		}
		if n := jwtKeysHeld(t, a, partnerTD); n != held {
			t.Errorf("after a failed refresh arbor holds %d JWT keys of %s, want the %d it had", n, partnerTD, held)
		}

		a.cli(t, "federation", "delete", "-id", partnerTD)
		if out := a.cli(t, "federation", "list"); strings.Contains(out, url) || strings.Contains(out, gone) {
			t.Errorf("federation list after delete still shows the relationship:\n%s", out)
		}
		if r := a.cliRun(t, "federation", "show", "-trustDomain", partnerTD); r.err == nil {
			t.Errorf("federation show after delete succeeded:\n%s", r.stdout)
		}
	})
}

// jwtKeysHeld counts the JWT keys of td's bundle arbor holds.
func jwtKeysHeld(t *testing.T, a *arborServer, td string) int {
	t.Helper()
	out := a.cli(t, "bundle", "list", "-id", "spiffe://"+td, "-format", "spiffe")
	start := strings.Index(out, "{")
	if start < 0 {
		t.Fatalf("bundle list printed no SPIFFE bundle:\n%s", out)
	}
	var doc struct {
		Keys []struct {
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(strings.NewReader(out[start:])).Decode(&doc); err != nil {
		t.Fatalf("bundle list output: %v\n%s", err, out)
	}
	n := 0
	for _, k := range doc.Keys {
		if k.Use == "jwt-svid" {
			n++
		}
	}
	return n
}
