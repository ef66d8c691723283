package topology

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// checkGolden compares got with testdata/golden/name, or rewrites it with -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// TestInvalidFiles runs every file of testdata/invalid through the parser:
// each shows one rule (the file's first line says which), and the expected
// diagnostics, with their positions, messages and fix hints, are in the
// .golden file beside it. Files named warn-* must be valid with warnings.
func TestInvalidFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.hcl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".hcl")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, diags := Parse(src, path)
			if len(diags) == 0 {
				t.Fatalf("Parse(%s) reported nothing", path)
			}
			warnOnly := strings.HasPrefix(name, "warn-")
			if diags.HasErrors() == warnOnly {
				t.Errorf("Parse(%s) errors = %v, want %v:\n%s", path, diags.HasErrors(), !warnOnly, FormatDiagnostics(diags, nil))
			}
			if (f == nil) != diags.HasErrors() {
				t.Errorf("Parse(%s) File = %v with errors %v", path, f, diags.HasErrors())
			}
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename != path || d.Subject.Start.Line < 1 || d.Detail == "" {
					t.Errorf("diagnostic %q has no position in %s or no detail: %+v", d.Summary, path, d.Subject)
				}
			}
			out := FormatDiagnostics(diags, map[string]*hcl.File{path: {Bytes: src}})
			checkGolden(t, strings.TrimSuffix(path, ".hcl")+".golden", []byte(out))
		})
	}
}

// exampleFiles are the topology files users copy; all must validate clean.
var exampleFiles = []string{"quickstart.hcl", "single-server.hcl", "multi-cloud.hcl", "x509pop.hcl", "ha-root.hcl", "replicas.hcl", "federation.hcl",
	"federation/example-org.hcl", "federation/partner.hcl"}

// exampleWarnings are the warnings an example is allowed: quickstart's
// and the two-trust-domain example's co-located agents use join tokens,
// which is fine on one machine.
var exampleWarnings = map[string]int{"quickstart.hcl": 3, "federation/example-org.hcl": 2, "federation/partner.hcl": 1}

func parseExample(t *testing.T, name string) *File {
	t.Helper()
	f, diags := ParseFile(filepath.Join("..", "examples", name))
	if diags.HasErrors() || len(diags) != exampleWarnings[name] {
		t.Fatalf("ParseFile(%s) has %d diagnostics, want %d warnings:\n%s", name, len(diags), exampleWarnings[name], FormatDiagnostics(diags, nil))
	}
	return f
}

func TestExamplesValidateClean(t *testing.T) {
	for _, name := range exampleFiles {
		t.Run(name, func(t *testing.T) { parseExample(t, name) })
	}
}

// TestExampleGolden renders plan, graph and every node's configuration of
// every example, and a few simulations, against golden files.
func TestExampleGolden(t *testing.T) {
	for _, name := range exampleFiles {
		t.Run(name, func(t *testing.T) {
			f := parseExample(t, name)
			base := filepath.Join("testdata", "golden", strings.TrimSuffix(name, ".hcl"))
			var b bytes.Buffer
			if err := NewPlan(f).WriteText(&b); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, base+".plan.txt", b.Bytes())
			for _, format := range []string{GraphDOT, GraphMermaid, GraphSVG} {
				b.Reset()
				if err := WriteGraph(&b, f, format); err != nil {
					t.Fatal(err)
				}
				checkGolden(t, base+".graph."+format, b.Bytes())
			}
			for _, s := range f.Servers {
				cfg, err := Render(f, s.Name)
				if err != nil {
					t.Fatal(err)
				}
				b.Reset()
				if err := cfg.WriteHCL(&b); err != nil {
					t.Fatal(err)
				}
				checkGolden(t, base+".render."+s.Name+".hcl", b.Bytes())
				b.Reset()
				if err := cfg.WriteJSON(&b); err != nil {
					t.Fatal(err)
				}
				checkGolden(t, base+".render."+s.Name+".json", b.Bytes())
			}
		})
	}

	f := parseExample(t, "multi-cloud.hcl")
	start := time.Date(2025, 1, 10, 8, 0, 0, 0, time.UTC)
	for _, sc := range []struct {
		down string
		d    time.Duration
	}{{"aws-us-east-1", 6 * time.Hour}, {"root", 20 * 24 * time.Hour}, {"aws-us-east-1a", 10 * time.Minute}} {
		sim, err := Simulate(f, sc.down, sc.d, start)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := sim.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		checkGolden(t, filepath.Join("testdata", "golden", "multi-cloud.simulate."+sc.down+".txt"), b.Bytes())
	}
}

// renderFiles are testdata/spire files whose arbor rendering (HCL and
// JSON, every node) is golden-tested besides their SPIRE one.
var renderFiles = []string{"cloud-attestors.hcl"}

func TestRenderGolden(t *testing.T) {
	for _, name := range renderFiles {
		f, diags := ParseFile(filepath.Join("testdata", "spire", name))
		if diags.HasErrors() || len(diags) > 0 {
			t.Fatalf("ParseFile(%s) has diagnostics:\n%s", name, FormatDiagnostics(diags, nil))
		}
		base := filepath.Join("testdata", "spire", strings.TrimSuffix(name, ".hcl"))
		for _, s := range f.Servers {
			t.Run(name+"/"+s.Name, func(t *testing.T) {
				cfg, err := Render(f, s.Name)
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				if err := cfg.WriteHCL(&b); err != nil {
					t.Fatal(err)
				}
				checkGolden(t, base+".render."+s.Name+".hcl", b.Bytes())
				b.Reset()
				if err := cfg.WriteJSON(&b); err != nil {
					t.Fatal(err)
				}
				checkGolden(t, base+".render."+s.Name+".json", b.Bytes())
			})
		}
	}
}

// TestRenderedHCLAndJSONAgree checks that the JSON form is HCL's JSON
// syntax for the same body: both parse to the same attributes.
func TestRenderedHCLAndJSONAgree(t *testing.T) {
	f := parseExample(t, "multi-cloud.hcl")
	cfg, err := Render(f, "aws-us-east-1a")
	if err != nil {
		t.Fatal(err)
	}
	var h, j bytes.Buffer
	if err := cfg.WriteHCL(&h); err != nil {
		t.Fatal(err)
	}
	if err := cfg.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	flatten := func(src []byte, name string) map[string]string {
		f, diags := parseHCLOrJSON(src, name)
		if diags.HasErrors() {
			t.Fatalf("rendered %s does not parse: %v", name, diags)
		}
		return f
	}
	fromHCL := flatten(h.Bytes(), "r.hcl")
	if got := fromHCL["server[aws-us-east-1a].ca_ttl"]; got != `cty.StringVal("7d")` {
		t.Errorf("rendered ca_ttl = %s, want 7d; all: %v", got, fromHCL)
	}
	if diff := cmp.Diff(fromHCL, flatten(j.Bytes(), "r.json")); diff != "" {
		t.Errorf("HCL and JSON renderings differ (-hcl +json):\n%s", diff)
	}
}
