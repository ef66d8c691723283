package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/arborid/arbor/agent"
)

// StartAgent runs an in-process agent with cfg until the test's cleanup
// (30 s at most to stop), waiting until it is ready: attested, synced and
// serving its Workload API (ready within timeout, else the test fails).
func StartAgent(t testing.TB, cfg agent.Config, timeout time.Duration) *agent.Agent {
	t.Helper()
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s")
		}
	})
	select {
	case <-ag.Ready():
	case err := <-done:
		t.Fatalf("agent stopped before it was ready: %v", err)
	case <-time.After(timeout):
		t.Fatalf("agent not ready within %v", timeout)
	}
	return ag
}
