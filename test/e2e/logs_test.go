package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// logPrefix is the TIER/PROCESS column of an `arbor logs` line and the
// time of the line after it.
var logPrefix = regexp.MustCompile(`^(\S+)\s+\| (?:time=(\S+) )?`)

// TestLogsOfRunningTree runs `arbor logs` on a running four-server tree:
// every process of the tree (servers, co-located agents, workload agents,
// demo workloads) appears under its tier's prefix, in time order; with NODE
// names only those tiers; --follow prints an entry created at leaf-a's admin
// socket once its server logs it, and stops on SIGINT.
func TestLogsOfRunningTree(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "lg")
	topo := childTree(t, dir)
	up := runUp(t, topo)
	up.waitOutput(t, "ready;", 3*time.Minute)

	out, errOut, code := arborRun(t, "logs", topo)
	if code != 0 {
		t.Fatalf("arbor logs exited %d: %s", code, errOut)
	}
	seen := map[string]int{}
	var last time.Time
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := logPrefix.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("arbor logs line without a TIER/PROCESS prefix: %q", line)
			continue
		}
		seen[m[1]]++
		if m[2] == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[2])
		if err != nil {
			t.Errorf("arbor logs line with an unreadable time: %q", line)
			continue
		}
		if at.Before(last) {
			t.Errorf("arbor logs line out of time order (after %v): %q", last, line)
		}
		last = at
	}
	for _, p := range []string{"root/server", "regional/server", "regional/agent", "leaf-a/server", "leaf-a/agent",
		"leaf-a/workload-agent", "leaf-a/demo", "leaf-b/server", "leaf-b/agent", "leaf-b/workload-agent", "leaf-b/demo"} {
		if seen[p] == 0 {
			t.Errorf("arbor logs printed no line of %s; prefixes seen: %v", p, seen)
		}
	}
	if len(seen) != 11 {
		t.Errorf("arbor logs printed %d prefixes, want the tree's 11 processes: %v", len(seen), seen)
	}

	out, _, code = arborRun(t, "logs", topo, "leaf-a", "root")
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !strings.HasPrefix(line, "leaf-a/") && !strings.HasPrefix(line, "root/") {
			t.Errorf("arbor logs FILE leaf-a root printed another tier's line: %q", line)
			break
		}
	}
	if code != 0 || !strings.Contains(out, "leaf-a/demo ") || !strings.Contains(out, "root/server ") {
		t.Errorf("arbor logs FILE leaf-a root (exit %d) lacks leaf-a's demo or root's server:\n%s", code, tailString(out, 10))
	}
	if _, errOut, code := arborRun(t, "logs", topo, "nope"); code != 1 || !strings.Contains(errOut, `unknown server "nope"`) {
		t.Errorf("arbor logs of an unknown node: exit %d, %q; want exit 1 naming it", code, errOut)
	}

	var follow syncBuffer
	f := exec.Command(arborBin, "logs", "--follow", "--tail", "1", topo, "leaf-a")
	f.Stdout, f.Stderr = &follow, &follow
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- f.Wait() }()
	t.Cleanup(func() { f.Process.Kill() })
	poll(t, time.Minute, "arbor logs --follow printing its last line", func() error {
		if follow.String() == "" {
			return fmt.Errorf("nothing printed yet")
		}
		return nil
	})
	marker := spiffeid.RequireFromPath(td, "/follow-marker")
	leaf := &arborServer{adminSock: filepath.Join(dir, "leaf-a", "admin.sock")}
	leaf.createEntry(t, spiffeid.RequireFromPath(td, "/host"), marker, "unix:uid:4242")
	poll(t, time.Minute, "arbor logs --follow printing leaf-a's entry", func() error {
		for _, line := range strings.Split(follow.String(), "\n") {
			if strings.HasPrefix(line, "leaf-a/server ") && strings.Contains(line, `msg="entry created"`) && strings.Contains(line, marker.String()) {
				return nil
			}
		}
		return fmt.Errorf("not yet; printed:\n%s", tailString(follow.String(), 5))
	})
	for _, line := range strings.Split(strings.TrimSuffix(follow.String(), "\n"), "\n") {
		if !strings.HasPrefix(line, "leaf-a/") {
			t.Errorf("arbor logs --follow FILE leaf-a printed another tier's line: %q", line)
		}
	}
	f.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("arbor logs --follow exited with %v on SIGINT, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("arbor logs --follow still running 30s after SIGINT")
	}
	stopUp(t, up)
}
