package terraform

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// entriesEnv sets how many entries TestEntriesTofuVersusTopologyApply
// writes; CI's default is small, the performance figure in
// docs/performance.md is ARBOR_TF_ENTRIES=1000.
const entriesEnv = "ARBOR_TF_ENTRIES"

// layoutEnv "blocks" writes one resource block per entry instead of one
// block with for_each (to tell tofu's cost per instance of one resource
// from its cost per resource).
const layoutEnv = "ARBOR_TF_LAYOUT"

// TestEntriesTofuVersusTopologyApply writes the same N entries to two
// fresh servers, once with `arbor topology apply` (entry blocks) and once
// with `tofu apply` of N arbor_entry resources, checks that both servers
// then hold all N and that a second plan has no changes, and logs the two
// wall times side by side (a figure, never an assertion).
func TestEntriesTofuVersusTopologyApply(t *testing.T) {
	needSetup(t)
	n := 100
	if v := os.Getenv(entriesEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q is not a positive number", entriesEnv, v)
		}
	}
	start := func(name string) (*admin.Client, string) {
		dir := testkit.ShortDir(t)
		sock := filepath.Join(dir, "admin.sock")
		testkit.StartServer(t, server.Config{
			Name: name, TrustDomain: td, ListenAddr: "127.0.0.1:0",
			AdminSocket: sock, StateDir: filepath.Join(dir, "state"), JoinToken: true,
		})
		c, err := admin.Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, sock
	}
	viaTopology, topoSock := start("topology-apply")
	viaTofu, tofuSock := start("tofu-apply")
	ctx := testkit.Context(t, 20*time.Minute)

	// The same entries both ways.
	work := t.TempDir()
	var blocks, tf strings.Builder
	fmt.Fprintf(&tf, `terraform {
  required_providers {
    arbor = { source = "arborid/arbor" }
  }
}

provider "arbor" {
  admin_socket = %q
}

locals {
  n = %d
}

`, tofuSock, n)
	if os.Getenv(layoutEnv) == "blocks" {
		for i := 0; i < n; i++ {
			fmt.Fprintf(&tf, "resource \"arbor_entry\" \"e%d\" {\n  spiffe_id = \"spiffe://example.org/workload/%d\"\n  parent_id = \"spiffe://example.org/nodes/pool\"\n  selectors = [\"unix:uid:%d\"]\n  x509_svid_ttl = \"1h\"\n}\n", i, i, 10000+i)
		}
	} else {
		tf.WriteString(`
resource "arbor_entry" "e" {
  for_each      = toset([for i in range(local.n) : tostring(i)])
  spiffe_id     = "spiffe://example.org/workload/${each.key}"
  parent_id     = "spiffe://example.org/nodes/pool"
  selectors     = ["unix:uid:${10000 + tonumber(each.key)}"]
  x509_svid_ttl = "1h"
}
`)
	}
	fmt.Fprintf(&blocks, "trust_domain = \"example.org\"\n\nserver \"root\" {\n  admin_socket = %q\n  listen = \"127.0.0.1:18999\"\n  datastore \"sqlite\" {}\n  node_attestor \"join_token\" {}\n", topoSock)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&blocks, "  entry \"e%d\" {\n    spiffe_id = \"spiffe://example.org/workload/%d\"\n    parent_id = \"spiffe://example.org/nodes/pool\"\n    selectors = [\"unix:uid:%d\"]\n    x509_svid_ttl = \"1h\"\n  }\n", i, i, 10000+i)
	}
	blocks.WriteString("}\n")
	topo := filepath.Join(work, "entries.hcl")
	if err := os.WriteFile(topo, []byte(blocks.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tfDir := filepath.Join(work, "tf")
	os.MkdirAll(tfDir, 0o755)
	if err := os.WriteFile(filepath.Join(tfDir, "main.tf"), []byte(tf.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	cmd := exec.CommandContext(ctx, arborBin, "topology", "apply", topo)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("arbor topology apply: %v\n%s", err, out)
	}
	topoTime := time.Since(t0)

	mustTofu(t, tfDir, 2*time.Minute, "init", "-input=false")
	t0 = time.Now()
	mustTofu(t, tfDir, 15*time.Minute, "apply", "-auto-approve")
	tofuTime := time.Since(t0)

	for name, c := range map[string]*admin.Client{"topology apply": viaTopology, "tofu apply": viaTofu} {
		es, err := c.ListEntries(ctx, admin.EntryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != n {
			t.Errorf("after %s the server holds %d entries, want %d", name, len(es), n)
		}
	}
	t0 = time.Now()
	r := tofu(t, tfDir, 10*time.Minute, "plan", "-detailed-exitcode")
	planTime := time.Since(t0)
	if r.code != 0 {
		t.Fatalf("second tofu plan of %d entries: want no changes: %s", n, r)
	}
	t.Logf("%d entries: tofu apply %v, arbor topology apply %v (%.1fx); the no-change tofu plan after it %v",
		n, tofuTime.Round(time.Millisecond), topoTime.Round(time.Millisecond), tofuTime.Seconds()/topoTime.Seconds(), planTime.Round(time.Millisecond))
}
