package terraform

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestModulesTofuTest runs each module's own plan-time tests
// (terraform/modules/*/tests/*.tftest.hcl) with `tofu test`: registration,
// commands, files and the preconditions that fail a plan before anything
// changes. They need no server (a plan of a create does not dial one).
func TestModulesTofuTest(t *testing.T) {
	needSetup(t)
	tree := copyTree(t, t.TempDir())
	for _, m := range []string{"tier", "region"} {
		t.Run(m, func(t *testing.T) {
			dir := filepath.Join(tree, "modules", m)
			tests, _ := filepath.Glob(filepath.Join(dir, "tests", "*.tftest.hcl"))
			if len(tests) == 0 {
				t.Fatalf("module %s has no tests/*.tftest.hcl", m)
			}
			mustTofu(t, dir, 2*time.Minute, "init", "-input=false")
			r := mustTofu(t, dir, 5*time.Minute, "test")
			if !strings.Contains(r.stdout, "Success!") || strings.Contains(r.stdout, " 0 passed") {
				t.Fatalf("tofu test in modules/%s did not pass any run: %s", m, r)
			}
		})
	}
}
