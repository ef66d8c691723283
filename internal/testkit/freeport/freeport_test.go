package freeport

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Ports come from below the ephemeral range, are distinct and can be
// listened on.
func TestPortsBelowEphemeralRangeDistinctAndFree(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 200 {
		p := Must(t)
		if low-lowest >= 1000 && (p < lowest || p >= low) {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, low)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("listening on the free port %d: %v", p, err)
		}
		l.Close()
	}
}

// A port another socket listens on is never handed out.
func TestPortSkipsListeners(t *testing.T) {
	low := ephemeralLow()
	if low-lowest < 1000 {
		t.Fatalf("ephemeral range starts at %d: no room below it on this machine", low)
	}
	busy := map[int]bool{}
	for p := lowest; p < low; p += 8 {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // someone else's
		}
		defer l.Close()
		busy[p] = true
	}
	if len(busy) < 1000 {
		t.Fatalf("could listen on only %d test ports", len(busy))
	}
	for range 500 {
		if p := Must(t); busy[p] {
			t.Fatalf("port %d handed out while listened on", p)
		}
	}
}

// childEnv makes the test binary a second process that takes ports: it
// prints each, one per line, then waits for stdin to close.
const childEnv = "ARBOR_FREEPORT_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		claimDir = dir
		for range 2000 {
			p, err := Port()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println(p)
		}
		fmt.Println("done")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Two live processes are never handed the same port (go test runs test
// binaries side by side, each restarting servers on its ports), and a
// process's ports are free for others once it has exited.
func TestPortsDistinctAcrossProcesses(t *testing.T) {
	if ephemeralLow()-lowest < 1000 {
		t.Fatalf("ephemeral range starts at %d: no room below it on this machine", ephemeralLow())
	}
	dir := t.TempDir()
	old := claimDir
	claimDir = dir
	t.Cleanup(func() { claimDir = old })

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs := map[int]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "done" {
		p, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		theirs[p] = true
	}
	if len(theirs) != 2000 {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("child handed out %d ports, want 2000", len(theirs))
	}
	// 2000 picks each from ~22k ports would meet over a hundred times
	// without the claims.
	for range 2000 {
		if p := Must(t); theirs[p] {
			t.Fatalf("port %d handed to this process while the child holds it", p)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	// The child is gone: its claims went with it.
	n := 0
	for p := range theirs {
		if n == 50 {
			break
		}
		n++
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatalf("port %d still claimed after its process exited: %v", p, err)
		}
		f.Close()
	}
}
