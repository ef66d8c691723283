package topology

import (
	"path/filepath"
	"testing"
)

// Two topology files in one folder whose servers have the same names (every
// example's root is "root") must not share any state: each server's state
// directory, admin socket, datastore and co-located agent are under the
// file's own state root, .arbor/<file-stem>.
func TestDefaultStateIsPerFile(t *testing.T) {
	const quick = `
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "48h"
}
server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  agent {
    node_attestor "join_token" {}
  }
}
`
	const single = `
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
}
`
	qf := parseNoErrors(t, quick, "/etc/arbor/quickstart.hcl")
	sf := parseNoErrors(t, single, "/etc/arbor/single-server.hcl")
	qr, sr := qf.Root(), sf.Root()

	for _, c := range []struct{ what, a, b string }{
		{"state_dir", qr.StateDir, sr.StateDir},
		{"admin_socket", qr.AdminSocket, sr.AdminSocket},
		{"datastore", qr.Datastore.Path, sr.Datastore.Path},
	} {
		if c.a == c.b {
			t.Errorf("root %s of quickstart.hcl and single-server.hcl is the same: %s", c.what, c.a)
		}
	}
	for _, c := range []struct{ got, want string }{
		{qr.StateDir, "/etc/arbor/.arbor/quickstart/root"},
		{sr.StateDir, "/etc/arbor/.arbor/single-server/root"},
		{sr.AdminSocket, "/etc/arbor/.arbor/single-server/root/admin.sock"},
	} {
		if c.got != c.want {
			t.Errorf("default path = %s, want %s", c.got, c.want)
		}
	}
	reg, err := qf.Server("regional")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/etc/arbor/.arbor/quickstart/regional/agent"; reg.Agent.DataDir != want {
		t.Errorf("co-located agent data_dir = %s, want %s", reg.Agent.DataDir, want)
	}
	if want := "/etc/arbor/.arbor/quickstart/regional/agent.sock"; reg.Agent.SocketPath != want {
		t.Errorf("co-located agent socket = %s, want %s", reg.Agent.SocketPath, want)
	}
}

func TestStateRoot(t *testing.T) {
	tests := []struct{ path, want string }{
		{"examples/quickstart.hcl", filepath.Join("examples", ".arbor", "quickstart")},
		{"/etc/arbor/prod.eu.hcl", "/etc/arbor/.arbor/prod.eu"},
		{"tree.hcl.json", filepath.Join(".arbor", "tree")},
		{"tree.json", filepath.Join(".arbor", "tree")},
		{"noext", filepath.Join(".arbor", "noext")},
	}
	for _, tt := range tests {
		if got := StateRoot(tt.path); got != tt.want {
			t.Errorf("StateRoot(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func parseNoErrors(t *testing.T, src, filename string) *File {
	t.Helper()
	f, diags := Parse([]byte(src), filename)
	if diags.HasErrors() {
		t.Fatalf("Parse(%s):\n%s", filename, FormatDiagnostics(diags, nil))
	}
	return f
}
