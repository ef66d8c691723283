// Package freeport picks TCP ports on 127.0.0.1 for servers that tests
// start, and often restart, on a fixed port.
//
// A port taken from the kernel (listening on port 0 and closing) lies in
// the ephemeral range, which the kernel also hands out as the source port
// of every outgoing connection: while a test's server is down between two
// runs, any client socket on the machine (its own agents', another test
// binary's) may be bound to its port, and the restart fails with "address
// already in use". The ports here come from below the ephemeral range,
// which the kernel never assigns by itself.
//
// A port is free when picked, but a test binds it later and, when it
// restarts a server, again and again for minutes; go test runs several
// test binaries at once, and each picks from the same range. So every
// port handed out is claimed for the life of the process: an exclusive
// flock on a file named after it in a directory all test binaries of this
// user share (the kernel drops the lock when the process ends, however it
// ends). No two live processes are handed the same port, and one process
// never gets the same port twice.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// lowest is the first port handed out: above the well-known and most
// registered service ports a developer machine runs.
const lowest = 10000

var (
	mu     sync.Mutex
	issued = map[int]bool{}
	// claims holds the open lock files of the ports this process was
	// handed; they stay open (and locked) until it exits.
	claims []*os.File
	// claimDir is where the lock files live; a variable for the tests.
	claimDir = filepath.Join(os.TempDir(), fmt.Sprintf("arbor-freeport-%d", os.Getuid()))
)

// Port returns a port on 127.0.0.1 that nothing listened on when it was
// picked, below the kernel's ephemeral range, not returned before by this
// process and not held by another live process that took it from here.
func Port() (int, error) {
	high := ephemeralLow() - 1
	mu.Lock()
	defer mu.Unlock()
	if high-lowest < 1000 {
		// An ephemeral range reaching this low leaves no room below it:
		// take the kernel's pick, as tests did before.
		return kernelPort()
	}
	for range 1000 {
		p := lowest + rand.IntN(high-lowest+1)
		if issued[p] {
			continue
		}
		ok, err := claim(p)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue // another process's
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use by something outside these tests; keep the claim
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no free port found in %d-%d after 1000 tries", lowest, high)
}

// claim takes port p for this process: an exclusive, non-blocking flock on
// claimDir/<p>. It reports false when another process holds it. Either
// way p is marked issued, so this process does not try it again. The caller
// holds mu.
func claim(p int) (bool, error) {
	issued[p] = true
	if err := os.MkdirAll(claimDir, 0o700); err != nil {
		return false, fmt.Errorf("freeport: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(claimDir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("freeport: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("freeport: locking %s: %w", f.Name(), err)
	}
	claims = append(claims, f)
	return true, nil
}

func kernelPort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("freeport: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if issued[p] {
			continue
		}
		ok, err := claim(p)
		if err != nil {
			return 0, err
		}
		if ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("freeport: the kernel kept handing out ports already issued")
}

// Addr returns "127.0.0.1:<port>" with a port from Port, failing t if
// there is none.
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Must(t)))
}

// Must returns a port from Port, failing t if there is none.
func Must(t testing.TB) int {
	t.Helper()
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ephemeralLow reads the first port of the kernel's ephemeral range
// (Linux; 32768, the common default, where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
