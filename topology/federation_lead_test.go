package topology

import (
	"fmt"
	"strings"
	"testing"
)

// TestFederationLeadWarning: a bundle endpoint whose refresh_hint is more
// than half the shortest rotation margin of the tree (a third of a ca_ttl)
// gets a warning at its refresh_hint naming that server; a hint within it,
// or the default hint with default lifetimes, gets none.
func TestFederationLeadWarning(t *testing.T) {
	tree := func(hint string, ttls ...string) string {
		var b strings.Builder
		b.WriteString("trust_domain = \"example.org\"\ndefaults {\n  x509_svid_ttl = \"5s\"\n  jwt_svid_ttl = \"5s\"\n  min_outage_budget = \"1s\"\n}\n")
		for i, ttl := range ttls {
			fmt.Fprintf(&b, "server \"t%d\" {\n  listen = \"127.0.0.1:%d\"\n  health_listen = \"off\"\n", i, 9000+i)
			if ttl != "" {
				fmt.Fprintf(&b, "  ca_ttl = %q\n", ttl)
			}
			if i > 0 {
				fmt.Fprintf(&b, "  parent = \"t%d\"\n", i-1)
			} else {
				b.WriteString("  bundle_endpoint {\n    listen = \"127.0.0.1:8443\"\n")
				if hint != "" {
					fmt.Fprintf(&b, "    refresh_hint = %q\n", hint)
				}
				b.WriteString("  }\n")
			}
			b.WriteString("}\n")
		}
		return b.String()
	}
	tests := []struct {
		name, src string
		want      string // the server named in the warning, "" for none
		atHint    bool
	}{
		{"defaults", tree("", "", "12h"), "", false},
		// t1's margin is 20m: a hint of 10m is exactly half, 11m too long.
		{"hint at half the margin", tree("10m", "2h", "1h"), "", false},
		{"hint too long for the child", tree("11m", "2h", "1h"), `"t1"`, true},
		{"default hint, short root", tree("", "20m"), `"t0"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := []byte(tt.src)
			_, diags := ParseWith(src, testPath, Options{LookupEnv: envOf()})
			if diags.HasErrors() {
				t.Fatalf("parse errors:\n%s\n%s", FormatDiagnostics(diags, nil), tt.src)
			}
			var got []string
			for _, d := range diags {
				if d.Summary != "Federated trust domains may miss a new key" {
					continue
				}
				got = append(got, d.Detail)
				at := string(d.Subject.SliceBytes(src))
				if tt.atHint && !strings.HasPrefix(at, `"`) {
					t.Errorf("warning points at %q, want the refresh_hint value", at)
				}
				if !tt.atHint && !strings.HasPrefix(at, "bundle_endpoint") {
					t.Errorf("warning points at %q, want the bundle_endpoint block", at)
				}
				if !strings.Contains(d.Detail, "server "+tt.want+" publishes") {
					t.Errorf("warning names the wrong server (want %s): %s", tt.want, d.Detail)
				}
			}
			if tt.want == "" && len(got) > 0 {
				t.Errorf("unexpected warning: %v", got)
			}
			if tt.want != "" && len(got) != 1 {
				t.Errorf("got %d warnings, want one naming %s", len(got), tt.want)
			}
		})
	}
}
