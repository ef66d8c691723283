package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childTree writes a root, a regional tier and two leaves: with the demos,
// arbor up runs eleven children for it (four servers, three co-located
// agents, two workload agents, two demo workloads).
func childTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "trust_domain = %q\n", td.Name())
	for _, s := range []struct{ name, parent, ttl string }{
		{"root", "", "48h"}, {"regional", "root", "24h"}, {"leaf-a", "regional", "12h"}, {"leaf-b", "regional", "12h"},
	} {
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
	return topo
}

// procChild is a process seen in /proc.
type procChild struct {
	pid  int
	name string // the command line
}

// childrenOf lists the live processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []procChild {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []procChild
	for _, d := range dirs {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := procStat(p)
		if !ok || ppid != pid || state == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		out = append(out, procChild{pid: p, name: strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")})
	}
	return out
}

// procStat reads the parent pid and state of pid; ok is false when it is gone.
func procStat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, "", false
	}
	ppid, _ = strconv.Atoi(fields[1])
	return ppid, fields[0], true
}

// alive is the subset of procs still running as the same program: not gone,
// not a zombie, and with the same command line (the pid was not reused).
func alive(procs []procChild) []procChild {
	var out []procChild
	for _, p := range procs {
		_, state, ok := procStat(p.pid)
		if !ok || state == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		if strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ") == p.name {
			out = append(out, p)
		}
	}
	return out
}

// startUpOnPipe starts arbor up on topo with its stdout the write end of a
// pipe whose read end is returned, as with `arbor up FILE | tee up.log`; its
// stderr is in the upProc's out.
func startUpOnPipe(t *testing.T, topo string) (*upProc, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	u := &upProc{out: &syncBuffer{}, exited: make(chan struct{})}
	u.cmd = exec.Command(arborBin, "up", "--status-every", "1s", topo)
	u.cmd.Stdout, u.cmd.Stderr = w, u.out
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() { u.err = u.cmd.Wait(); close(u.exited) }()
	t.Cleanup(func() {
		if !u.done() {
			u.cmd.Process.Kill()
			<-u.exited
		}
		r.Close()
	})
	return u, r
}

// readUntil reads r until a line contains want, and returns what it read.
func readUntil(t *testing.T, r io.Reader, want string, timeout time.Duration) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		var seen strings.Builder
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), want) {
				found <- seen.String()
				return
			}
		}
		found <- seen.String()
	}()
	select {
	case s := <-found:
		if !strings.Contains(s, want) {
			t.Fatalf("arbor up's output ended before %q:\n%s", want, s)
		}
		return s
	case <-time.After(timeout):
		t.Fatalf("no %q from arbor up within %v", want, timeout)
		return ""
	}
}

// killLeftovers kills, at cleanup, whichever of procs still runs, so that a
// failing test does not leave a tree behind.
func killLeftovers(t *testing.T, procs []procChild) {
	t.Cleanup(func() {
		for _, p := range alive(procs) {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
}

// waitGone polls /proc until none of procs runs, or fails the test.
func waitGone(t *testing.T, procs []procChild, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := alive(procs)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range left {
				ppid, _, _ := procStat(p.pid)
				fmt.Fprintf(&b, "\n  pid %d (parent %d): %s", p.pid, ppid, p.name)
			}
			t.Fatalf("%s: %d of %d children still running after %v:%s", what, len(left), len(procs), within, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUpStdoutClosedThenCtrlC is `arbor up FILE | tee up.log` and Ctrl-C in
// that terminal: the pipe's reader goes first. arbor up must keep running
// with its stdout gone (status lines keep being written into the closed
// pipe), and on SIGINT stop every child before it exits.
func TestUpStdoutClosedThenCtrlC(t *testing.T) {
	requireSetup(t)
	topo := childTree(t, shortTempDir(t, "pip"))
	up, r := startUpOnPipe(t, topo)
	readUntil(t, r, "ready;", 3*time.Minute)
	kids := childrenOf(t, up.cmd.Process.Pid)
	if len(kids) != 11 {
		t.Errorf("arbor up runs %d children, want 11 (4 servers, 3 co-located agents, 2 workload agents, 2 demos)", len(kids))
	}
	killLeftovers(t, kids)
	r.Close() // tee dies
	// Two status rounds into the closed pipe.
	time.Sleep(2500 * time.Millisecond)
	if up.done() {
		t.Fatalf("arbor up died when its stdout closed (%v); stderr:\n%s", up.err, up.out.String())
	}
	if left := alive(kids); len(left) != len(kids) {
		t.Errorf("%d of %d children stopped while arbor up's stdout was closed, want all running", len(kids)-len(left), len(kids))
	}
	up.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-up.exited:
		if up.err != nil {
			t.Errorf("arbor up exited with %v after Ctrl-C, want a clean exit; stderr:\n%s", up.err, up.out.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("arbor up did not exit within 90s of SIGINT")
	}
	// arbor up waits for each child before it exits.
	waitGone(t, kids, 2*time.Second, "after arbor up stopped on SIGINT")
}

// TestUpKilledChildrenExit: when arbor up is killed with SIGKILL, so that it
// cannot stop anything, every child still notices and exits.
func TestUpKilledChildrenExit(t *testing.T) {
	requireSetup(t)
	topo := childTree(t, shortTempDir(t, "kil"))
	up, r := startUpOnPipe(t, topo)
	readUntil(t, r, "ready;", 3*time.Minute)
	go io.Copy(io.Discard, r)
	kids := childrenOf(t, up.cmd.Process.Pid)
	if len(kids) != 11 {
		t.Errorf("arbor up runs %d children, want 11", len(kids))
	}
	killLeftovers(t, kids)
	up.cmd.Process.Kill()
	<-up.exited
	// SIGTERM from the kernel, then each one's graceful stop.
	waitGone(t, kids, 30*time.Second, "after arbor up was killed")
}
