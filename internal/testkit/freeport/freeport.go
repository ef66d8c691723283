// Package freeport picks TCP ports on 127.0.0.1 for servers that tests
// start, and often restart, on a fixed port.
//
// A port taken from the kernel (listening on port 0 and closing) lies in
// the ephemeral range, which the kernel also hands out as the source port
// of every outgoing connection: while a test's server is down between two
// runs, any client socket on the machine (its own agents', another test
// binary's) may be bound to its port, and the restart fails with "address
// already in use". The ports here come from below the ephemeral range,
// which the kernel never assigns by itself, and one test binary never gets
// the same port twice.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lowest is the first port handed out: above the well-known and most
// registered service ports a developer machine runs.
const lowest = 10000

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// Port returns a port on 127.0.0.1 that nothing listened on when it was
// picked, below the kernel's ephemeral range and not returned before by
// this process.
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
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use
		}
		l.Close()
		issued[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no free port found in %d-%d after 1000 tries", lowest, high)
}

func kernelPort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("freeport: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !issued[p] {
			issued[p] = true
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
