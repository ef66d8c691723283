package terraform

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/topology"
)

// TestInvalidTopologyFailsPlan breaks the example's topology (a leaf whose
// CA outlives what its region can sign) and checks that tofu plan fails,
// before anything is changed, with the topology's own diagnostic at its
// file:line:col.
func TestInvalidTopologyFailsPlan(t *testing.T) {
	needSetup(t)
	work := t.TempDir()
	dir := filepath.Join(copyTree(t, work), "examples", "tree")
	topo := filepath.Join(dir, "topology.hcl")
	src, err := os.ReadFile(topo)
	if err != nil {
		t.Fatal(err)
	}
	// leaf-a1's ca_ttl longer than region-a's.
	broken, n := breakLeafCATTL(string(src))
	if n != 1 {
		t.Fatalf("cannot find leaf-a1's ca_ttl in %s to break", topo)
	}
	if err := os.WriteFile(topo, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	stateRoot := t.TempDir()
	_, diags := topology.ParseFileWith(topo, topology.Options{Vars: map[string]string{"state_root": stateRoot}})
	var first *hcl.Diagnostic
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil {
			first = d
			break
		}
	}
	if first == nil {
		t.Fatalf("the broken topology has no error diagnostic: %s", topology.FormatDiagnostics(diags, nil))
	}
	mustTofu(t, dir, 3*time.Minute, "init", "-input=false")
	r := tofu(t, dir, 3*time.Minute, "plan", "-var", "state_root="+stateRoot, "-var", "install_root="+filepath.Join(work, "install"))
	if r.code == 0 {
		t.Fatalf("tofu plan of an invalid topology succeeded: %s", r)
	}
	at := fmt.Sprintf("topology.hcl:%d:%d", first.Subject.Start.Line, first.Subject.Start.Column)
	out := unwrap(r.stderr)
	if !strings.Contains(out, at) || !strings.Contains(out, first.Summary) {
		t.Fatalf("tofu plan's error does not carry the topology diagnostic %q at %s: %s", first.Summary, at, r)
	}
	if strings.Contains(r.stdout, "will be created") {
		t.Fatalf("tofu plan of an invalid topology planned changes: %s", r)
	}
}

// breakLeafCATTL sets leaf-a1's ca_ttl to ten years.
func breakLeafCATTL(src string) (string, int) {
	i := strings.Index(src, `server "leaf-a1"`)
	if i < 0 {
		return src, 0
	}
	j := strings.Index(src[i:], "ca_ttl")
	if j < 0 {
		return src, 0
	}
	k := i + j
	end := strings.Index(src[k:], "\n")
	return src[:k] + `ca_ttl = "87600h"` + src[k+end:], 1
}

// unwrap joins tofu's boxed diagnostic lines ("│ text") into one text, so a
// message it wrapped is found whole.
func unwrap(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(l), "│╷╵"))
		if l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}

// TestUnreachableAdminSocket plans an entry against a provider whose admin
// socket does not exist: tofu fails with one line saying so.
func TestUnreachableAdminSocket(t *testing.T) {
	needSetup(t)
	dir := t.TempDir()
	sock := filepath.Join(testkit.ShortDir(t), "nothing", "admin.sock")
	cfg := fmt.Sprintf(`terraform {
  required_providers {
    arbor = { source = "arborid/arbor" }
  }
}

provider "arbor" {
  admin_socket = %q
}

resource "arbor_entry" "web" {
  spiffe_id = "spiffe://example.org/web"
  parent_id = "spiffe://example.org/spire/server"
  selectors = ["unix:uid:1000"]
}
`, sock)
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	mustTofu(t, dir, 2*time.Minute, "init", "-input=false")
	r := tofu(t, dir, 2*time.Minute, "apply", "-auto-approve")
	if r.code == 0 {
		t.Fatalf("tofu apply with no server succeeded: %s", r)
	}
	want := "admin socket " + sock + " does not exist"
	var lines []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, want) {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("tofu apply's error does not say %q on one line: %s", want, r)
	}
}
