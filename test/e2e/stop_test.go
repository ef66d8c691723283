package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopBound is what the stop tests allow from Ctrl-C to arbor up's exit.
// The target is 2s; measured on a 2-core machine with other tests running:
// 0.04-0.15s for the four-server tree with its demos (eleven processes).
const stopBound = 5 * time.Second

// stoppedLine is arbor up's last line: how many processes it stopped and
// that none had to be killed.
var stoppedLine = regexp.MustCompile(`(?m)\Astopped: (\d+) processes in \d+\.\ds\z`)

// interruptUp sends SIGINT to arbor up and returns how long it took to exit,
// requiring exit status 0 within stopBound.
func interruptUp(t *testing.T, u *upProc) time.Duration {
	t.Helper()
	began := time.Now()
	u.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-u.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("arbor up still running 30s after Ctrl-C\n%s", tailString(u.out.String(), 20))
	}
	took := time.Since(began)
	t.Logf("arbor up stopped %v after Ctrl-C", took.Round(time.Millisecond))
	if u.err != nil {
		t.Errorf("arbor up exited with %v after Ctrl-C, want 0\n%s", u.err, tailString(u.out.String(), 20))
	}
	if took > stopBound {
		t.Errorf("arbor up took %v to stop after Ctrl-C, want at most 2s (allowed %v)\n%s", took, stopBound, tailString(u.out.String(), 20))
	}
	return took
}

// treeDemosOK reports whether arbor up's status lines show both demos of
// childTree passing their checks.
func treeDemosOK(out string) error {
	for _, l := range []string{"leaf-a", "leaf-b"} {
		if !strings.Contains(out, "demo spiffe://example.org/demo/"+l+": mTLS ok, JWT ok") {
			return fmt.Errorf("demo on %s not ok yet; output so far:\n%s", l, tailString(out, 12))
		}
	}
	return nil
}

// lastLines are the last n lines of out, joined.
func lastLines(out string, n int) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// TestUpStopsFast: Ctrl-C to arbor up running a four-server tree with its
// demo workloads stops every child at once (no demo lingering until a
// kill), leaves no child and no socket, and ends with "stopping ..." and a
// "stopped" line counting the eleven processes.
func TestUpStopsFast(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "stp")
	topo := childTree(t, dir)
	up := runUp(t, topo)
	poll(t, 3*time.Minute, "arbor up ready with both demos ok", func() error {
		if up.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", up.err, up.out.String())
		}
		return treeDemosOK(up.out.String())
	})
	kids := childrenOf(t, up.cmd.Process.Pid)
	if len(kids) != 11 {
		t.Fatalf("arbor up runs %d children, want 11", len(kids))
	}
	killLeftovers(t, kids)
	interruptUp(t, up)
	if left := alive(kids); len(left) != 0 {
		t.Errorf("%d children still run after arbor up exited: %v", len(left), left)
	}
	tail := lastLines(up.out.String(), 2)
	m := stoppedLine.FindStringSubmatch(lastLines(tail, 1))
	if !strings.HasPrefix(tail, "stopping ...\n") || m == nil || m[1] != "11" {
		t.Errorf("arbor up ended with\n%s\nwant stopping ... and stopped: 11 processes in N.Ns", tail)
	}
	for _, s := range []string{"root/admin.sock", "root/up.sock", "leaf-a/admin.sock", "leaf-a/agent.sock", "leaf-a/demo/workload.sock"} {
		if _, err := os.Lstat(filepath.Join(dir, s)); err == nil {
			t.Errorf("%s is still there after arbor up stopped", s)
		}
	}
}

// TestUpInterruptedWhileStarting: Ctrl-C while arbor up is still starting
// the tree is a clean stop too: exit 0 (was: "arbor: context canceled",
// exit 1), the children started so far stopped, the "stopped" line last.
func TestUpInterruptedWhileStarting(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "sti")
	topo := childTree(t, dir)
	up := runUp(t, topo)
	up.waitOutput(t, "regional: starting server", 2*time.Minute)
	kids := childrenOf(t, up.cmd.Process.Pid)
	killLeftovers(t, kids)
	interruptUp(t, up)
	if strings.Contains(up.out.String(), "ready;") {
		t.Fatalf("arbor up was ready before the interrupt; the test needs it interrupted while starting:\n%s", up.out.String())
	}
	if left := alive(kids); len(left) != 0 {
		t.Errorf("%d children still run after arbor up exited: %v", len(left), left)
	}
	if tail := lastLines(up.out.String(), 2); !strings.HasPrefix(tail, "stopping ...\n") || !stoppedLine.MatchString(lastLines(tail, 1)) {
		t.Errorf("arbor up interrupted while starting ended with\n%s\nwant stopping ... and the stopped line", tail)
	}
}
