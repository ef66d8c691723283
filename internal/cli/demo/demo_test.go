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

// TestPingStopsWithItsContext: a peer that stops answering in the middle of
// a ping does not hold the demo for the exchange's timeout once its context
// ends (the check loop, and with it the stop, would wait for it).
func TestPingStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ours, peer := net.Pipe()
	defer peer.Close()
	defer ours.Close()
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- ping(ctx, ours) }()
	peer.SetDeadline(time.Now().Add(exchangeTimeout))
	if line, err := bufio.NewReader(peer).ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("the peer read %q, %v; want ping", line, err)
	}
	cancel() // the peer never answers
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ping without an answer = nil, want an error")
		}
		if took := time.Since(began); took >= exchangeTimeout {
			t.Errorf("ping returned after %v, its exchange timeout: the context's end did not cut it short", took)
		}
	case <-time.After(2 * exchangeTimeout):
		t.Fatal("ping still waits for the silent peer")
	}
}
