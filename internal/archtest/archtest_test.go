// Package archtest keeps the import graph the way the folders describe the
// architecture (DESIGN.md, "Layout"): upstream/ is the contract at the
// bottom, the server core does not reach up into the tier folders, and
// production code never imports testing.
package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/arborid/arbor"

// pkg is what the test reads of `go list -json`.
type pkg struct {
	Dir        string
	GoFiles    []string
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

// list runs `go list -json` (with -deps when deps is set) on patterns.
func list(t *testing.T, deps bool, patterns ...string) []pkg {
	t.Helper()
	args := []string{"list", "-json=Dir,GoFiles,ImportPath,Imports,Deps,Standard"}
	if deps {
		args = append(args, "-deps")
	}
	cmd := exec.Command("go", append(args, patterns...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if !p.Standard {
			// Read what go list read, so that go test's cache (which sees
			// only the files this process opens) notices an edited import.
			for _, f := range p.GoFiles {
				if _, err := os.ReadFile(filepath.Join(p.Dir, f)); err != nil {
					t.Fatal(err)
				}
			}
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// testKits are the packages that exist only for tests (they may import
// testing and start whole servers); a new one is added here on purpose.
var testKits = []string{
	"internal/testkit",
	"internal/testkit/freeport",
	"internal/testkit/h2sniff",
	"internal/datastore/datastoretest",
	"internal/nodeattest/x509pop/x509poptest",
	"upstream/internal/fakes",
	"upstream/internal/upstreamtest",
}

func isTestKit(path string) bool {
	return slices.Contains(testKits, strings.TrimPrefix(path, module+"/"))
}

// TestUpstreamImportsNoInternal: the CA-source contract and its adapters
// sit at the bottom; nothing they build on is arbor's internal/.
func TestUpstreamImportsNoInternal(t *testing.T) {
	for _, p := range list(t, false, "./upstream/...") {
		if isTestKit(p.ImportPath) {
			continue
		}
		for _, d := range list(t, true, p.ImportPath) {
			if strings.HasPrefix(d.ImportPath, module+"/internal/") {
				t.Errorf("%s depends on %s; upstream/ must import nothing from internal/", p.ImportPath, d.ImportPath)
			}
		}
	}
}

// TestCoreImportsNoTierFolder: the CA manager and the API handlers are
// below the tier folders; the policies of root/ and downstream/ reach them
// through the server's wiring, never by import.
func TestCoreImportsNoTierFolder(t *testing.T) {
	forbidden := func(path string) bool {
		rel, ok := strings.CutPrefix(path, module+"/")
		if !ok {
			return false
		}
		for _, top := range []string{"root", "downstream", "agent", "topology", "cmd"} {
			if rel == top || strings.HasPrefix(rel, top+"/") {
				return true
			}
		}
		// upstream itself is the contract; its adapters are tier folders.
		return strings.HasPrefix(rel, "upstream/")
	}
	for _, p := range list(t, true, "./internal/ca", "./internal/api") {
		if p.ImportPath != module+"/internal/ca" && p.ImportPath != module+"/internal/api" {
			continue
		}
		for _, d := range p.Deps {
			if forbidden(d) {
				t.Errorf("%s depends on %s; internal/ca and internal/api import no tier folder", p.ImportPath, d)
			}
		}
	}
}

// TestProductionCodeImportsNoTesting: no package built into the binary
// imports testing (test kits excepted: only tests import them).
func TestProductionCodeImportsNoTesting(t *testing.T) {
	for _, p := range list(t, true, "./cmd/arbor") {
		if p.Standard {
			continue
		}
		if isTestKit(p.ImportPath) {
			t.Errorf("the binary depends on the test kit %s", p.ImportPath)
			continue
		}
		if slices.Contains(p.Imports, "testing") {
			t.Errorf("%s imports testing", p.ImportPath)
		}
	}
	for _, p := range list(t, false, "./...") {
		if isTestKit(p.ImportPath) || strings.HasPrefix(p.ImportPath, module+"/test/") {
			continue
		}
		if slices.Contains(p.Imports, "testing") {
			t.Errorf("%s imports testing", p.ImportPath)
		}
	}
}

// TestServerCoreImportsNoCLI: the command line's clients (internal/cli/...:
// the admin client, reconcile, the launcher, the demo, the workload-side
// commands) sit apart from the server every tier runs; nothing but cmd/,
// other CLI packages and the other admin client, the Terraform provider
// (isAdminClient), imports them.
func TestServerCoreImportsNoCLI(t *testing.T) {
	cli := module + "/internal/cli/"
	for _, p := range list(t, false, "./...") {
		if strings.HasPrefix(p.ImportPath, cli) || strings.HasPrefix(p.ImportPath, module+"/cmd/") ||
			strings.HasPrefix(p.ImportPath, module+"/test/") || isTestKit(p.ImportPath) || isAdminClient(p.ImportPath) {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, cli) {
				t.Errorf("%s imports %s; only cmd/, internal/cli/ and the Terraform provider use the command line's clients", p.ImportPath, imp)
			}
		}
	}
}

// isAdminClient tells the Terraform provider's packages: like the command
// line, a client of a server's admin API.
func isAdminClient(path string) bool {
	return path == module+"/internal/tfprovider" || path == module+"/internal/tftopology" ||
		strings.HasPrefix(path, module+"/terraform/")
}

// TestTerraformFrameworkStaysInTheProvider: the Terraform plugin framework
// (and the go-plugin, msgpack and gRPC plugin stack under it) is linked
// only into the provider's packages, never into the arbor binary.
func TestTerraformFrameworkStaysInTheProvider(t *testing.T) {
	for _, p := range list(t, false, "./...") {
		if isAdminClient(p.ImportPath) {
			continue
		}
		for _, imp := range p.Deps {
			if strings.HasPrefix(imp, "github.com/hashicorp/terraform-plugin-") {
				t.Errorf("%s depends on %s; only internal/tfprovider, internal/tftopology and terraform/ may", p.ImportPath, imp)
				break
			}
		}
	}
}
