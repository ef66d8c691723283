package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// FuzzParse feeds the loader arbitrary files: it must never panic, every
// diagnostic must have a position, and a file it accepts must plan, render,
// graph and simulate without error. The seed corpus (examples and the
// invalid files) runs in every `go test`.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "invalid", "*.hcl"))
	ex, _ := filepath.Glob(filepath.Join("..", "examples", "*.hcl"))
	for _, p := range append(seeds, ex...) {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	env := func(string) (string, bool) { return "", false }
	f.Fuzz(func(t *testing.T, src []byte) {
		// Parse from a directory with no files, so file() reads nothing real.
		file, diags := ParseWith(src, "/nonexistent/fuzz.hcl", Options{LookupEnv: env})
		for _, d := range diags {
			if d.Subject == nil {
				t.Fatalf("diagnostic without position: %s: %s", d.Summary, d.Detail)
			}
		}
		if file == nil {
			return
		}
		_ = NewPlan(file)
		for _, s := range file.Servers {
			if _, err := Render(file, s.Name); err != nil {
				t.Fatal(err)
			}
			if _, err := Simulate(file, s.Name, 1, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := WriteGraph(discard{}, file, GraphDOT); err != nil {
			t.Fatal(err)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// parseHCLOrJSON flattens a rendered configuration into path=value pairs.
func parseHCLOrJSON(src []byte, name string) (map[string]string, hcl.Diagnostics) {
	p := hclparse.NewParser()
	var f *hcl.File
	var diags hcl.Diagnostics
	if filepath.Ext(name) == ".json" {
		f, diags = p.ParseJSON(src, name)
	} else {
		f, diags = p.ParseHCL(src, name)
	}
	if diags.HasErrors() {
		return nil, diags
	}
	out := map[string]string{}
	blocks := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "agent"}}}
	for _, typ := range []string{"server", "entry", "federation", "datastore", "upstream", "node_attestor", "workload_attestor", "auth"} {
		blocks.Blocks = append(blocks.Blocks, hcl.BlockHeaderSchema{Type: typ, LabelNames: []string{"label"}})
	}
	// A server's k8s_psat has cluster blocks; an agent's, a cluster attribute.
	k8sPSATBlocks := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "cluster", LabelNames: []string{"label"}}}}
	// A server's azure_msi has tenant blocks.
	azureMSIBlocks := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "tenant", LabelNames: []string{"label"}}}}
	var walk func(body hcl.Body, prefix string)
	walk = func(body hcl.Body, prefix string) {
		schema := blocks
		if strings.HasPrefix(prefix, "server[") && strings.HasSuffix(prefix, ".node_attestor[k8s_psat].") {
			schema = k8sPSATBlocks
		}
		if strings.HasPrefix(prefix, "server[") && strings.HasSuffix(prefix, ".node_attestor[azure_msi].") {
			schema = azureMSIBlocks
		}
		content, remain, d := body.PartialContent(schema)
		diags = append(diags, d...)
		// Native HCL complains about the blocks PartialContent took, but
		// returns the attributes anyway.
		attrs, _ := remain.JustAttributes()
		for n, a := range attrs {
			v, d := a.Expr.Value(nil)
			diags = append(diags, d...)
			out[prefix+n] = v.GoString()
		}
		for _, b := range content.Blocks {
			walk(b.Body, fmt.Sprintf("%s%s%v.", prefix, b.Type, b.Labels))
		}
	}
	walk(f.Body, "")
	return out, diags
}
