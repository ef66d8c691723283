package topology

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRotationMarginWarning: a server whose rotation
// leaves less than depth × the bundle sync interval + the agents' sync
// interval between publishing its next CA (half of ca_ttl) and using it (a
// sixth of ca_ttl left) gets a warning at its ca_ttl.
func TestRotationMarginWarning(t *testing.T) {
	tree := func(syncInterval string, ttls ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "trust_domain = \"example.org\"\ndefaults {\n  x509_svid_ttl = \"5s\"\n  jwt_svid_ttl = \"5s\"\n  min_outage_budget = \"1s\"\n")
		if syncInterval != "" {
			fmt.Fprintf(&b, "  sync_interval = %q\n", syncInterval)
		}
		b.WriteString("}\n")
		for i, ttl := range ttls {
			fmt.Fprintf(&b, "server \"t%d\" {\n  listen = \"127.0.0.1:%d\"\n  health_listen = \"off\"\n  ca_ttl = %q\n", i, 9000+i, ttl)
			if i > 0 {
				fmt.Fprintf(&b, "  parent = \"t%d\"\n", i-1)
			}
			b.WriteString("}\n")
		}
		return b.String()
	}
	tests := []struct {
		name string
		src  string
		want []string // "server: need" of each warning
	}{
		// Four levels: 3 × 10s + 5s = 35s; a 90s ca_ttl leaves 30s, 105s exactly 35s.
		{"four levels", tree("", "8m", "4m", "105s", "52s"), []string{"t3: 35s"}},
		{"four levels, short", tree("", "8m", "4m", "90s", "45s"), []string{"t2: 35s", "t3: 35s"}},
		// The bound is the tree's depth, for the root too: its new root CA
		// must reach the deepest tier.
		{"root too short for the depth", tree("", "40s", "20s"), []string{"t0: 15s", "t1: 15s"}},
		{"agents sync faster", tree("1s", "40s", "20s"), []string{"t1: 11s"}},
		{"single root", tree("", "15s"), nil},
		{"single root, shorter than an agent sync", tree("", "12s"), []string{"t0: 5s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := ParseWith([]byte(tt.src), testPath, Options{LookupEnv: envOf()})
			if diags.HasErrors() {
				t.Fatalf("parse errors:\n%s\n%s", FormatDiagnostics(diags, nil), tt.src)
			}
			var got []string
			for _, d := range diags {
				if d.Summary != "Rotation margin shorter than propagation" {
					continue
				}
				if d.Subject == nil || !strings.HasPrefix(string(d.Subject.SliceBytes([]byte(tt.src))), `"`) {
					t.Errorf("warning does not point at the ca_ttl value: %v", d)
				}
				name := strings.SplitN(d.Detail, "\"", 3)[1]
				need := strings.SplitN(strings.SplitN(d.Detail, "needs up to ", 2)[1], " ", 2)[0]
				got = append(got, name+": "+need)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
	if got, want := PropagationBound(3, 5*time.Second), 35*time.Second; got != want {
		t.Errorf("PropagationBound(3, 5s) = %v, want %v", got, want)
	}
}
