package launcher

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoughly(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{12 * time.Hour, "12h"},
		{47*time.Hour + 56*time.Minute + 10*time.Second, "47h56m"},
		{5*time.Minute + 31*time.Second, "6m"},
		{42 * time.Second, "42s"},
	}
	for _, tt := range tests {
		if got := roughly(tt.d); got != tt.want {
			t.Errorf("roughly(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// A tier stopped on request and one that does not answer each get one
// line saying so; the header says whether arbor up is still starting.
func TestTreeStatusText(t *testing.T) {
	agents := 2
	budget := int64(11 * 3600)
	reach := false
	at := time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)
	ts := &TreeStatus{File: "tree.hcl", TrustDomain: "example.org", UpPID: 42, Checked: at.Add(-11 * time.Hour), Tiers: []TierStatus{
		{Name: "root", State: TierUnreachable, Error: "cannot reach the server"},
		{Name: "leaf-a", Parent: "root", Depth: 1, State: TierServing, Serving: true, Agents: &agents, CANotAfter: &at,
			OutageBudgetSeconds: &budget, PlanOutageBudgetSeconds: 6 * 3600, ParentReachable: &reach},
		{Name: "leaf-b", Parent: "root", Depth: 1, State: TierDown},
	}}
	var out bytes.Buffer
	if err := ts.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	want := `example.org (tree.hcl): arbor up pid 42, still starting the tree
  root      NOT SERVING  cannot reach the server
    leaf-a  serving      agents 2, CA until 2026-12-03T01:00:00Z (11h), outage budget 11h (plan: 6h at worst), PARENT root UNREACHABLE
    leaf-b  DOWN         stopped with arbor up --stop; arbor up --start leaf-b tree.hcl brings it back
`
	if out.String() != want {
		t.Errorf("WriteText printed\n%s\nwant\n%s", out.String(), want)
	}
}

// Status of a file no arbor up runs is a *NotRunningError naming the lock.
func TestStatusNotRunning(t *testing.T) {
	f := tree(t, filepath.Join(t.TempDir(), "tree.hcl"), "example.org", 9401, "root=", "leaf=root")
	_, err := Status(context.Background(), f)
	var nr *NotRunningError
	if !errors.As(err, &nr) || !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Status of a file not run = %v, want a *NotRunningError", err)
	}
	lock, _ := upLock(f)
	if nr.Lock != lock || !strings.Contains(err.Error(), "arbor up "+f.Path) {
		t.Errorf("Status error %q, want it to name %s and the command", err, lock)
	}
}
