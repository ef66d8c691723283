package launcher

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/cli/demo"
	"github.com/arborid/arbor/topology"
)

func writeStatus(t *testing.T, path string, st demo.Status) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDemosOKOnlyFromThisRun: a resumed arbor up finds the previous run's
// status files saying "ok"; it must not announce working demos from them
// while the new demos still fail to connect (the first status block would
// then contradict that line).
func TestDemosOKOnlyFromThisRun(t *testing.T) {
	dir := t.TempDir()
	since := time.Now()
	f := &topology.File{Servers: []*topology.Server{{Name: "leaf-a"}, {Name: "leaf-b"}}}
	var tiers []*liveTier
	for _, s := range f.Servers {
		tiers = append(tiers, &liveTier{f: f, srv: s, label: s.Name, demoState: filepath.Join(dir, s.Name+".json"), demoSince: since})
	}
	ok := demo.Status{ID: "spiffe://example.org/demo/x", MTLS: "ok", JWT: "ok"}
	refused := demo.Status{ID: "spiffe://example.org/demo/x", MTLS: "mTLS to x: connection refused", JWT: "ok"}
	at := func(st demo.Status, when time.Time) demo.Status { st.Checked = when.UTC(); return st }

	tests := []struct {
		name     string
		a, b     *demo.Status // nil: no file
		wantLine string
	}{
		{"previous run's files", ptr(at(ok, since.Add(-time.Minute))), ptr(at(ok, since.Add(-time.Minute))), "not every demo workload passes"},
		{"one demo not written yet", ptr(at(ok, since.Add(time.Second))), nil, "not every demo workload passes"},
		{"one demo refused", ptr(at(ok, since.Add(time.Second))), ptr(at(refused, since.Add(time.Second))), "not every demo workload passes"},
		{"both ok in this run", ptr(at(ok, since.Add(time.Second))), ptr(at(ok, since.Add(time.Second))), "all 2 demo workloads"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, st := range []*demo.Status{tt.a, tt.b} {
				os.Remove(tiers[i].demoState)
				if st != nil {
					writeStatus(t, tiers[i].demoState, *st)
				}
			}
			var out strings.Builder
			l := &launcher{files: []*topology.File{f}, tiers: tiers, opts: Options{Out: &out, StartTimeout: 300 * time.Millisecond}, began: time.Now()}
			l.waitDemos(context.Background())
			if !strings.Contains(out.String(), tt.wantLine) {
				t.Errorf("waitDemos printed %q, want a line with %q", out.String(), tt.wantLine)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
