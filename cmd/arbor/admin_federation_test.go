package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestFederationCommands: arbor federation create|list|show|update|refresh|
// delete against a real server, with SPIRE's flag spellings too; bad input
// is one readable error and changes nothing.
func TestFederationCommands(t *testing.T) {
	sock := startServer(t)
	run := func(args ...string) (string, error) {
		t.Helper()
		out, _, err := arbor(t, "", append(args, "--socket-path", sock)...)
		return out, err
	}
	if _, err := run("federation", "create", "--trust-domain", "partner.test", "--bundle-endpoint-url", "https://partner.test:8443"); err == nil ||
		!strings.Contains(err.Error(), "--endpoint-spiffe-id") {
		t.Errorf("create https_spiffe without an endpoint ID: %v, want an error naming --endpoint-spiffe-id", err)
	}
	if _, err := run("federation", "create", "--trust-domain", "partner.test", "--profile", "https_web", "--bundle-endpoint-url", "http://partner.test"); err == nil {
		t.Error("create with a plain-HTTP URL succeeded")
	}
	if out, err := run("federation", "create", "--trust-domain", "partner.test", "--bundle-endpoint-url", "https://partner.test:8443",
		"--endpoint-spiffe-id", "spiffe://partner.test/spire/server"); err != nil || !strings.Contains(out, "partner.test:8443") {
		t.Fatalf("federation create: %q, %v", out, err)
	}
	if _, err := run("federation", "create", "-trustDomain", "web.test", "-bundleEndpointProfile", "https_web", "-bundleEndpointURL", "https://web.test/bundle"); err != nil {
		t.Fatalf("federation create with SPIRE's spellings: %v", err)
	}
	out, err := run("federation", "list", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Relationships []struct {
			TrustDomain string `json:"trust_domain"`
		} `json:"federation_relationships"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Relationships) != 2 || list.Relationships[0].TrustDomain != "partner.test" {
		t.Errorf("federation list --output json = %s (%v), want partner.test and web.test", out, err)
	}
	if _, err := run("federation", "update", "--trust-domain", "web.test", "--profile", "https_web", "--bundle-endpoint-url", "https://web.test/v2"); err != nil {
		t.Fatal(err)
	}
	if out, err := run("federation", "show", "--trust-domain", "web.test"); err != nil || !strings.Contains(out, "https://web.test/v2") {
		t.Errorf("federation show after update: %q, %v", out, err)
	}
	if _, err := run("federation", "refresh", "--trust-domain", "partner.test"); err == nil {
		t.Error("federation refresh without any bundle of partner.test to authenticate its endpoint succeeded")
	}
	if _, err := run("federation", "delete", "--trust-domain", "web.test"); err != nil {
		t.Fatal(err)
	}
	if out, _ := run("federation", "list"); !strings.Contains(out, "Found 1 federation relationship") {
		t.Errorf("federation list after delete:\n%s", out)
	}
	if _, err := run("federation", "delete", "--trust-domain", "web.test"); err == nil {
		t.Error("deleting a relationship twice succeeded")
	}
}
