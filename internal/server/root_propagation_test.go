package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/server"
)

// TestRootCAPropagatesThroughFourTiers measures how long
// a new root CA takes from the root preparing it to the bundle of the third
// tier below it (four levels), with every tier pulling its parent's bundle
// every `sync`, and checks that every tier holds it before the root
// activates it. docs/nesting.md reports the measurement next to the bound
// depth × sync.
//
// Clocks: all tiers share one clock that starts 13h behind real time, so the
// root's 24h CA is past its half-life once the clock is set to real time,
// while every certificate presented over TLS stays valid in real time (the
// downstream client verifies its parent's certificate with the real clock).
func TestRootCAPropagatesThroughFourTiers(t *testing.T) {
	const sync = 100 * time.Millisecond
	c := newClock()
	c.Advance(-13 * time.Hour)
	long := func(cfg *server.Config) { cfg.CATTL, cfg.X509SVIDTTL = 24*time.Hour, 24*time.Hour }
	tiers := []*harness{startServerOn(t, c, long)}
	for i := 1; i <= 3; i++ {
		tiers = append(tiers, startChildOn(t, tiers[i-1], fmt.Sprintf("tier%d", i), sync, long))
	}
	root := tiers[0]
	a, _ := root.srv.CA().X509CA()

	start := time.Now()
	c.Advance(13 * time.Hour) // past the half-life of every tier's CA
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := root.srv.CA().Rotate(ctx); err != nil {
		t.Fatalf("root Rotate: %v", err)
	}
	b := root.srv.CA().Status().NextX509CA
	if b == nil || b.Equal(a) {
		t.Fatal("the root prepared no new root CA past its half-life")
	}
	if !hasDER(ownX509(root), b.Raw) {
		t.Fatal("the root's bundle lacks its prepared CA")
	}
	arrived := make([]time.Duration, len(tiers))
	deadline := time.Now().Add(20 * time.Second)
	for pending := len(tiers) - 1; pending > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the new root CA reached only %d of %d tiers within 20s", len(tiers)-1-pending, len(tiers)-1)
		}
		for i, h := range tiers[1:] {
			if arrived[i+1] == 0 && hasDER(ownX509(h), b.Raw) {
				arrived[i+1] = time.Since(start)
				pending--
			}
		}
		time.Sleep(2 * time.Millisecond) // polling resolution, not a wait for an event
	}
	for i := 1; i < len(tiers); i++ {
		t.Logf("new root CA in tier %d's bundle after %v (bound %d × %v = %v)", i, arrived[i].Round(time.Millisecond), i, sync, time.Duration(i)*sync)
	}
	if cur, _ := root.srv.CA().X509CA(); !cur.Equal(a) {
		t.Fatal("the root activated its new CA before the measurement ended")
	}

	// Activation comes a third of the CA TTL (8h) after preparation: every
	// tier holds the new CA by then, and its SVIDs verify everywhere.
	activateAt := a.NotAfter.Add(-a.NotAfter.Sub(a.NotBefore) / 6)
	c.Advance(activateAt.Sub(c.Now()) + time.Second)
	if err := root.srv.CA().Rotate(ctx); err != nil {
		t.Fatalf("root Rotate at the activation point: %v", err)
	}
	if cur, _ := root.srv.CA().X509CA(); !cur.Equal(b) {
		t.Fatalf("the root did not activate its new CA at the last sixth of the old one's lifetime")
	}
	for i, h := range tiers {
		if !hasDER(ownX509(h), b.Raw) {
			t.Errorf("tier %d lacks the root's new CA when it is activated", i)
		}
	}
}
