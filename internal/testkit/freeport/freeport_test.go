package freeport

import (
	"net"
	"strconv"
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
