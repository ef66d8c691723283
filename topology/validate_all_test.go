package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// An attribute error does not hide the checks across blocks that do not
// depend on that attribute: validate reports every problem in one run, each
// at its file:line:col.
func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	path := filepath.Join("testdata", "invalid", "attribute-error-and-cross-block.hcl")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, diags := Parse(src, path)
	got := map[string]bool{}
	for _, d := range diags {
		got[fmt.Sprintf("%d:%d %s %s", d.Subject.Start.Line, d.Subject.Start.Column, severity(d), d.Summary)] = true
	}
	for _, want := range []string{
		"17:19 error Invalid duration",               // the attribute error
		"24:22 error Unknown federated trust domain", // entry "web"
		"26:9 error Duplicate entry name",            // the second "web"
		"32:22 error Invalid SPIFFE ID",              // entry "db"'s parent_id
		"35:22 error Unknown federated trust domain", // entry "db", broken elsewhere
		"37:9 error Duplicate entry name",            // the second "db", after a broken one
		"46:19 error Duplicate listen port",          // regional on root's port
		"18:19 warning SQLite with replicas",         // root's replicas
	} {
		if !got[want] {
			t.Errorf("Parse(%s) did not report %q; it reported:\n%s", path, want, FormatDiagnostics(diags, nil))
		}
	}
}

// A check that depends on a broken attribute is not run: a listen address
// that does not parse is not compared (it would be the default, and
// collide with another server's default), a ca_ttl that does not parse is
// not compared with the parent's.
func TestValidateSkipsWhatDependsOnABrokenAttribute(t *testing.T) {
	const src = `trust_domain = "example.org"
server "root" {
  ca_ttl        = "2h"
  health_listen = "off"
}
server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:x"
  ca_ttl        = "long"
  health_listen = "off"
}
`
	_, diags := Parse([]byte(src), testPath)
	var summaries []string
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			summaries = append(summaries, d.Summary)
		}
	}
	if len(summaries) != 2 || strings.Count(strings.Join(summaries, "|"), "Invalid") != 2 {
		t.Errorf("Parse() errors = %q, want only the two invalid attributes:\n%s", summaries, FormatDiagnostics(diags, nil))
	}
}

func severity(d *hcl.Diagnostic) string {
	if d.Severity == hcl.DiagError {
		return "error"
	}
	return "warning"
}
