package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// A relative path to a file a node reads at start (examples/x509pop.hcl's
// agent-ca.pem before the reader makes it) gets a warning at the attribute
// when Options.CheckFiles asks for it; the file stays valid, absolute paths
// and files that exist get none, and without CheckFiles nothing is looked for.
func TestMissingRelativeFileWarns(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "present.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  node_attestor "x509pop" {
    ca_bundle_paths = ["present.pem", "agent-ca.pem", "/etc/pki/elsewhere.pem"]
  }
  upstream "disk" {
    cert_file_path = "up/ca.pem"
    key_file_path  = "present.pem"
  }
}
`
	path := filepath.Join(dir, "x509pop.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, diags := ParseFileWith(path, Options{CheckFiles: true})
	if diags.HasErrors() || f == nil {
		t.Fatalf("missing files must not be errors:\n%s", FormatDiagnostics(diags, nil))
	}
	var got []string
	for _, d := range diags {
		if d.Summary != "File not found" {
			continue
		}
		if d.Severity != hcl.DiagWarning {
			t.Errorf("%s: severity %v, want a warning", d.Summary, d.Severity)
		}
		got = append(got, d.Subject.String()+" "+strings.Fields(d.Detail)[0])
	}
	want := []string{
		path + ":6,39-53 " + filepath.Join(dir, "agent-ca.pem"),
		path + ":9,22-33 " + filepath.Join(dir, "up/ca.pem"),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("file warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	_, diags = ParseFile(path)
	for _, d := range diags {
		if d.Summary == "File not found" {
			t.Errorf("ParseFile without CheckFiles looked for files: %s", d.Detail)
		}
	}
}
