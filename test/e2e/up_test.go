package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/testkit"
)

// syncBuffer is a bytes.Buffer safe for a process writer and a test reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upProc is a running `arbor up` and its output.
type upProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, valid once exited is closed
}

// done reports whether arbor up has exited.
func (u *upProc) done() bool {
	select {
	case <-u.exited:
		return true
	default:
		return false
	}
}

// runUp starts `arbor up [flags] topo` and returns it with its output.
// waitOutput polls until arbor up has printed want (timeout at most), and
// fails the test if arbor up exits first.
func (u *upProc) waitOutput(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, "arbor up printing "+want, func() error {
		if u.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", u.err, u.out.String())
		}
		if !strings.Contains(u.out.String(), want) {
			return fmt.Errorf("not yet:\n%s", tailString(u.out.String(), 8))
		}
		return nil
	})
}

func runUp(t *testing.T, topo string, flags ...string) *upProc {
	t.Helper()
	return runUpFiles(t, []string{topo}, flags...)
}

// runUpFiles starts `arbor up [flags] topo...` (one trust domain per file).
func runUpFiles(t *testing.T, topos []string, flags ...string) *upProc {
	t.Helper()
	u := &upProc{out: &syncBuffer{}, exited: make(chan struct{})}
	u.cmd = exec.Command(arborBin, append(append([]string{"up", "--status-every", "1s"}, flags...), topos...)...)
	u.cmd.Stdout, u.cmd.Stderr = u.out, u.out
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { u.err = u.cmd.Wait(); close(u.exited) }()
	t.Cleanup(func() {
		if !u.done() {
			u.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-u.exited:
			case <-time.After(30 * time.Second):
				u.cmd.Process.Kill()
				<-u.exited
			}
		}
	})
	return u
}

// stopUp interrupts arbor up like Ctrl-C and requires a clean exit.
func stopUp(t *testing.T, u *upProc) {
	t.Helper()
	u.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-u.exited:
		if u.err != nil {
			t.Fatalf("arbor up exited with %v after Ctrl-C\n%s", u.err, tailString(u.out.String(), 30))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("arbor up did not stop within 60s of Ctrl-C\n%s", tailString(u.out.String(), 30))
	}
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestUpNestedTree runs `arbor up` on a four-server tree (root, regional,
// two leaves): every child obtains its CA through its co-located agent, the
// demo workloads on the two leaves talk mTLS and validate each other's
// JWT-SVIDs; Ctrl-C stops everything; a second run resumes with the same
// root CA and no new attestation.
func TestUpNestedTree(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "up")
	var b strings.Builder
	fmt.Fprintf(&b, "trust_domain = %q\n", td.Name())
	servers := []struct{ name, parent, ttl string }{
		{"root", "", "48h"}, {"regional", "root", "24h"}, {"leaf-a", "regional", "12h"}, {"leaf-b", "regional", "12h"},
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "server %q {\n  listen = \"127.0.0.1:%d\"\n  health_listen = \"127.0.0.1:%d\"\n  state_dir = %q\n  ca_ttl = %q\n",
			s.name, freePort(t), freePort(t), filepath.Join(dir, s.name), s.ttl)
		if s.parent != "" {
			fmt.Fprintf(&b, "  parent = %q\n  agent {\n    node_attestor \"join_token\" {}\n  }\n", s.parent)
		}
		b.WriteString("}\n")
	}
	topo := filepath.Join(dir, "tree.hcl")
	if err := os.WriteFile(topo, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	rootSock := filepath.Join(dir, "root", "admin.sock")
	root := &arborServer{adminSock: rootSock}
	leafSock := filepath.Join(dir, "leaf-a", "admin.sock")
	leaf := &arborServer{adminSock: leafSock}

	demosOK := func(out *syncBuffer) func() error {
		return func() error {
			s := out.String()
			for _, l := range []string{"leaf-a", "leaf-b"} {
				if !strings.Contains(s, "demo spiffe://example.org/demo/"+l+": mTLS ok, JWT ok") {
					return fmt.Errorf("demo on %s not ok yet; output so far:\n%s", l, tailString(s, 12))
				}
			}
			return nil
		}
	}

	up := runUp(t, topo)
	poll(t, 3*time.Minute, "both demo workloads reporting mTLS and JWT ok", func() error {
		if up.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", up.err, up.out.String())
		}
		return demosOK(up.out)()
	})
	rootCerts, _ := root.bundlePEM(t)
	leafCerts, _ := leaf.bundlePEM(t)
	if len(leafCerts) != 1 || !leafCerts[0].Equal(rootCerts[0]) {
		t.Fatalf("leaf-a trusts %d certificates, want exactly the root's CA", len(leafCerts))
	}
	agentsBefore := root.cli(t, "agent", "count")
	stopUp(t, up)
	for _, s := range servers {
		if _, err := os.Stat(filepath.Join(dir, s.name, "admin.sock")); err == nil {
			t.Errorf("%s's admin socket is still there after arbor up stopped", s.name)
		}
	}

	up = runUp(t, topo)
	poll(t, 3*time.Minute, "the resumed tree's demo workloads ok", func() error {
		if up.done() {
			t.Fatalf("arbor up (second run) exited early (%v):\n%s", up.err, up.out.String())
		}
		return demosOK(up.out)()
	})
	again, _ := root.bundlePEM(t)
	if len(again) != 1 || !again[0].Equal(rootCerts[0]) {
		t.Error("the root CA changed across arbor up runs")
	}
	if got := root.cli(t, "agent", "count"); got != agentsBefore {
		t.Errorf("root agent count %q after resume, was %q: agents re-attested", strings.TrimSpace(got), strings.TrimSpace(agentsBefore))
	}
	stopUp(t, up)
}

// TestQuickstartAsInREADME runs README's first command on a copy of
// examples/quickstart.hcl, takes the regional tier down and back up with
// --stop/--start while the leaves keep working, and stops with Ctrl-C.
func TestQuickstartAsInREADME(t *testing.T) {
	requireSetup(t)
	// The doc test runs the quickstart on the same fixed ports.
	release := testkit.LockExamplePorts(t, filepath.Join("..", "..", "examples", "quickstart.hcl"), 3*time.Minute)
	t.Cleanup(release)
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "quickstart.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t, "qs")
	topo := filepath.Join(dir, "quickstart.hcl")
	if err := os.WriteFile(topo, src, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	up := runUp(t, topo)
	out := up.out
	allOK := func() error {
		if up.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", up.err, out.String())
		}
		s := out.String()
		for _, l := range []string{"leaf-a", "leaf-b"} {
			if !strings.Contains(s, "demo spiffe://example.org/demo/"+l+": mTLS ok, JWT ok") {
				return fmt.Errorf("demo on %s not ok yet:\n%s", l, tailString(s, 10))
			}
		}
		return nil
	}
	poll(t, 3*time.Minute, "quickstart demo workloads ok", allOK)
	t.Logf("arbor up examples/quickstart.hcl: %v until both demo workloads reported mTLS and JWT ok", time.Since(start).Round(100*time.Millisecond))

	control := func(action string) {
		t.Helper()
		c := exec.Command(arborBin, "up", "--"+action, "regional", topo)
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("arbor up --%s regional: %v\n%s", action, err, b)
		}
	}
	control("stop")
	mark := len(out.String())
	poll(t, time.Minute, "status showing regional down while the leaves' demos stay ok", func() error {
		s := out.String()[mark:]
		if !strings.Contains(s, "regional             DOWN") {
			return fmt.Errorf("no DOWN line for regional yet")
		}
		if !strings.Contains(s, "leaf-a               ") || strings.Count(s, "mTLS ok, JWT ok") < 4 {
			return fmt.Errorf("leaves not reporting ok while regional is down:\n%s", tailString(s, 8))
		}
		return nil
	})
	control("start")
	mark = len(out.String())
	poll(t, time.Minute, "regional back and the leaves reaching it", func() error {
		s := out.String()[mark:]
		if strings.Contains(s, "regional             DOWN") || !strings.Contains(s, "leaf-a") || strings.Contains(s, "PARENT UNREACHABLE") {
			return fmt.Errorf("not recovered yet:\n%s", tailString(s, 8))
		}
		if strings.Count(s, "parent reachable") < 3 {
			return fmt.Errorf("waiting for a full status round:\n%s", tailString(s, 8))
		}
		return nil
	})
	stopUp(t, up)
}
