package demo

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestAcceptsPeersOfTheirTrustDomains: the demo's listener accepts the
// members of its own trust domain and of its peers' (another one when the
// ring crosses a federation), and no one else.
func TestAcceptsPeersOfTheirTrustDomains(t *testing.T) {
	own := spiffeid.RequireTrustDomainFromString("example.org")
	partner := spiffeid.RequireTrustDomainFromString("partner.example")
	accept := memberOfAny(own, partner, partner)
	tests := []struct {
		id   string
		want bool
	}{
		{"spiffe://example.org/demo/leaf-b", true},
		{"spiffe://partner.example/demo/leaf", true},
		{"spiffe://other.example/demo/leaf", false},
	}
	for _, tt := range tests {
		err := accept(spiffeid.RequireFromString(tt.id), nil)
		if got := err == nil; got != tt.want {
			t.Errorf("memberOfAny(example.org, partner.example)(%s) = %v, want accepted %v", tt.id, err, tt.want)
		}
	}
}

// TestServeStopsWithItsContext: a peer that keeps its connection open does
// not hold up the demo's stop (it did for the launcher's 15 s kill timeout).
func TestServeStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ours, peer := net.Pipe()
	defer peer.Close()
	done := make(chan struct{})
	go func() { serve(ctx, ours, nil); close(done) }()

	peer.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(peer, "ping")
	if line, err := bufio.NewReader(peer).ReadString('\n'); err != nil || line != "pong ok\n" {
		t.Fatalf("ping answered %q, %v; want pong ok", line, err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serve still runs 5s after its context ended, the peer's connection open")
	}
}
