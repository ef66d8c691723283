package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUpVarReachesChildren: arbor up --var gives the value to every child
// it starts, which read the same file: a leaf whose ca_ttl is a variable
// without a default comes up (each child would refuse the file without the
// value), and its CA lives as long as the value says.
func TestUpVarReachesChildren(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "var")
	src := fmt.Sprintf(`trust_domain = %q
variable "leaf_ttl" {
  description = "CA lifetime of the leaf"
}
server "root" {
  listen        = "127.0.0.1:%d"
  health_listen = "off"
  state_dir     = %q
  ca_ttl        = "48h"
}
server "leaf" {
  parent        = "root"
  listen        = "127.0.0.1:%d"
  health_listen = "127.0.0.1:%d"
  state_dir     = %q
  ca_ttl        = var.leaf_ttl
  agent {
    node_attestor "join_token" {}
  }
}
`, td.Name(), freePort(t), filepath.Join(dir, "root"), freePort(t), freePort(t), filepath.Join(dir, "leaf"))
	topo := filepath.Join(dir, "vars.hcl")
	if err := os.WriteFile(topo, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without the value: refused before anything starts.
	if out, err := exec.Command(arborBin, "up", "--no-demo", topo).CombinedOutput(); err == nil || !strings.Contains(string(out), "leaf_ttl") {
		t.Fatalf("arbor up without --var leaf_ttl: %v\n%s\nwant a refusal naming the variable", err, out)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd := exec.Command(arborBin, "up", "--no-demo", "--status-every", "1s", "--var", "leaf_ttl=12h", topo)
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		r.Close()
	})
	out := readUntil(t, r, "ready;", 3*time.Minute)
	if !strings.Contains(out, "leaf") {
		t.Errorf("arbor up's output names no leaf tier:\n%s", out)
	}
	// The leaf's CA is the 12h one the variable asked for.
	st, err := exec.Command(arborBin, "status", "--output", "json", "--var", "leaf_ttl=12h", topo).Output()
	if err != nil {
		t.Fatalf("arbor status: %v\n%s", err, st)
	}
	var trees []struct {
		Tiers []struct {
			Name       string     `json:"name"`
			CANotAfter *time.Time `json:"ca_not_after"`
		} `json:"tiers"`
	}
	if err := json.Unmarshal(st, &trees); err != nil || len(trees) != 1 {
		t.Fatalf("arbor status --output json: %v, %d trees\n%s", err, len(trees), st)
	}
	found := false
	for _, tier := range trees[0].Tiers {
		if tier.Name != "leaf" {
			continue
		}
		found = true
		if tier.CANotAfter == nil {
			t.Fatalf("arbor status shows no CA expiry for the leaf:\n%s", st)
		}
		if left := time.Until(*tier.CANotAfter); left > 12*time.Hour || left < 11*time.Hour {
			t.Errorf("the leaf's CA expires in %v, want about 12h (--var leaf_ttl=12h)", left.Round(time.Minute))
		}
	}
	if !found {
		t.Errorf("arbor status lists no leaf:\n%s", st)
	}
}
