package tier

import (
	"path/filepath"
	"testing"

	"github.com/arborid/arbor/topology"
)

// A workload agent's default data directory is under its file's state
// root: two files of one folder with a server of the same name (every
// example's root) never share one.
func TestWorkloadAgentDataDirPerFile(t *testing.T) {
	const src = `trust_domain = "example.org"
server "root" {
  health_listen = "off"
}
`
	dirs := map[string]string{}
	for _, name := range []string{"quickstart.hcl", "single-server.hcl"} {
		path := filepath.Join("/etc/arbor", name)
		f, diags := topology.Parse([]byte(src), path)
		if diags.HasErrors() {
			t.Fatalf("Parse(%s): %s", path, topology.FormatDiagnostics(diags, nil))
		}
		cfg, err := WorkloadAgentConfig(f, "root")
		if err != nil {
			t.Fatal(err)
		}
		dirs[name] = cfg.DataDir
	}
	if want := "/etc/arbor/.arbor/quickstart/agent-root"; dirs["quickstart.hcl"] != want {
		t.Errorf("WorkloadAgentConfig(quickstart.hcl, root).DataDir = %s, want %s", dirs["quickstart.hcl"], want)
	}
	if want := "/etc/arbor/.arbor/single-server/agent-root"; dirs["single-server.hcl"] != want {
		t.Errorf("WorkloadAgentConfig(single-server.hcl, root).DataDir = %s, want %s", dirs["single-server.hcl"], want)
	}
}
