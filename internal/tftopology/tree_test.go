package tftopology

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/arborid/arbor/topology"
)

// repoRoot is the directory holding go.mod, above the test's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
}

// validFiles are the topology files of the examples and of the topology
// package's SPIRE rendering tests: all valid.
func validFiles(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	var files []string
	for _, glob := range []string{"examples/*.hcl", "topology/testdata/spire/*.hcl"} {
		m, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			// cloud-attestors.render.eks.hcl and the like are rendered
			// outputs, not topology files.
			if !strings.Contains(filepath.Base(f), ".render.") {
				files = append(files, f)
			}
		}
	}
	if len(files) < 8 {
		t.Fatalf("found %d topology files, want the examples and topology/testdata/spire", len(files))
	}
	return files
}

// parse parses path as the data sources do, failing the test on errors.
func parse(t *testing.T, path string, vars map[string]string) (*topology.File, hcl.Diagnostics) {
	t.Helper()
	f, diags := topology.ParseFileWith(path, topology.Options{Vars: vars, CheckFiles: true})
	if diags.HasErrors() {
		t.Fatalf("ParseFileWith(%s): %s", path, topology.FormatDiagnostics(diags, nil))
	}
	return f, diags
}

func TestServersMatchTopology(t *testing.T) {
	for _, path := range validFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, _ := parse(t, path, nil)
			got := servers(f)
			if len(got) != len(f.Servers) {
				t.Fatalf("servers() has %d servers, the file %d", len(got), len(f.Servers))
			}
			plan := map[string]topology.TierPlan{}
			for _, tier := range topology.NewPlan(f).Tiers {
				plan[tier.Server] = tier
			}
			for _, s := range f.Servers {
				m, ok := got[s.Name]
				if !ok {
					t.Fatalf("servers() has no %q", s.Name)
				}
				budget := ""
				if b := plan[s.Name].IssuingBudget; b > 0 {
					budget = topology.FormatDuration(b)
				}
				var children []string
				for _, c := range f.Children(s.Name) {
					children = append(children, c.Name)
				}
				want := serverModel{
					Name:         s.Name,
					Parent:       s.Parent,
					Depth:        int64(plan[s.Name].Depth),
					SPIFFEID:     s.SPIFFEID.String(),
					Address:      s.Address,
					Listen:       s.Listen,
					AdminSocket:  s.AdminSocket,
					StateDir:     s.StateDir,
					HealthListen: s.HealthListen,
					CATTL:        topology.FormatDuration(s.CATTL),
					X509SVIDTTL:  topology.FormatDuration(s.X509SVIDTTL),
					JWTSVIDTTL:   topology.FormatDuration(s.JWTSVIDTTL),
					OutageBudget: budget,
					Replicas:     int64(s.Replicas),
					Children:     list(children),
				}
				if ag := s.Agent; ag != nil {
					want.Agent = &agentModel{
						SPIFFEID:        ag.SPIFFEID.String(),
						NodeAttestor:    ag.NodeAttestor.Kind,
						ServerSelectors: list(ag.ServerSelectors),
						SocketPath:      ag.SocketPath,
						DataDir:         ag.DataDir,
					}
					if ag.NodeAttestor.Kind == topology.NodeAttestorX509PoP {
						want.Agent.X509PoPCertificatePath = ag.NodeAttestor.CertificatePath
					}
				}
				if diff := cmp.Diff(want, m, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Entries" }, cmp.Ignore())); diff != "" {
					t.Errorf("servers()[%q] (-topology +got):\n%s", s.Name, diff)
				}
				checkEntries(t, f, s, m.Entries)
			}
		})
	}
}

// checkEntries compares the entries attribute of s with the entry blocks
// Render writes for it (TTLs resolved the same way).
func checkEntries(t *testing.T, f *topology.File, s *topology.Server, got []entryModel) {
	t.Helper()
	if len(got) != len(s.Entries) {
		t.Fatalf("server %q: %d entries, the file has %d", s.Name, len(got), len(s.Entries))
	}
	cfg, err := topology.Render(f, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	rendered := map[string]*topology.Block{}
	for _, b := range cfg.Body.Blocks {
		if b.Type == "entry" {
			rendered[b.Labels[0]] = b
		}
	}
	for i, e := range s.Entries {
		b := rendered[e.Name]
		if b == nil {
			t.Fatalf("Render(%q) has no entry %q", s.Name, e.Name)
		}
		attrs := map[string]any{}
		for _, a := range b.Attrs {
			attrs[a.Name] = a.Value
		}
		want := entryModel{
			Name:          e.Name,
			SPIFFEID:      attrs["spiffe_id"].(string),
			ParentID:      attrs["parent_id"].(string),
			Selectors:     attrs["selectors"].([]string),
			X509SVIDTTL:   attrs["x509_svid_ttl"].(string),
			JWTSVIDTTL:    attrs["jwt_svid_ttl"].(string),
			DNSNames:      attrs["dns_names"].([]string),
			Admin:         attrs["admin"].(bool),
			Downstream:    attrs["downstream"].(bool),
			FederatesWith: attrs["federates_with"].([]string),
			Hint:          attrs["hint"].(string),
		}
		if diff := cmp.Diff(want, got[i]); diff != "" {
			t.Errorf("server %q entry %d (-render +got):\n%s", s.Name, i, diff)
		}
	}
}

// TestQuickstartTree pins the shape of the quickstart tree, so that a
// conversion that agrees with a broken topology package is still caught.
func TestQuickstartTree(t *testing.T) {
	f, _ := parse(t, filepath.Join(repoRoot(t), "examples/quickstart.hcl"), nil)
	got := servers(f)
	for name, want := range map[string]struct {
		parent   string
		depth    int64
		children []string
		agent    bool
		budget   string
	}{
		"root":     {"", 0, []string{"regional"}, false, ""},
		"regional": {"root", 1, []string{"leaf-a", "leaf-b"}, true, "12h"},
		"leaf-a":   {"regional", 2, []string{}, true, "6h"},
		"leaf-b":   {"regional", 2, []string{}, true, "6h"},
	} {
		s := got[name]
		if s.Parent != want.parent || s.Depth != want.depth || !cmp.Equal(s.Children, want.children) ||
			(s.Agent != nil) != want.agent || s.OutageBudget != want.budget {
			t.Errorf("servers()[%q] = parent %q depth %d children %v agent %v budget %q, want %q %d %v %v %q",
				name, s.Parent, s.Depth, s.Children, s.Agent != nil, s.OutageBudget, want.parent, want.depth, want.children, want.agent, want.budget)
		}
	}
}

func TestVarsReachServers(t *testing.T) {
	path := filepath.Join(repoRoot(t), "examples/multi-cloud.hcl")
	f, _ := parse(t, path, nil)
	g, _ := parse(t, path, map[string]string{"region_ca_ttl": "20d"})
	var changed int
	before, after := servers(f), servers(g)
	for name, s := range after {
		ref := g.Servers[0]
		for _, srv := range g.Servers {
			if srv.Name == name {
				ref = srv
			}
		}
		if s.CATTL != topology.FormatDuration(ref.CATTL) {
			t.Errorf("servers()[%q].ca_ttl = %q, topology says %s", name, s.CATTL, topology.FormatDuration(ref.CATTL))
		}
		if s.CATTL != before[name].CATTL {
			changed++
			if s.CATTL != "20d" || s.OutageBudget != "10d" {
				t.Errorf("with region_ca_ttl = 20d, servers()[%q] has ca_ttl %q and outage_budget %q, want 20d and 10d", name, s.CATTL, s.OutageBudget)
			}
		}
	}
	if changed == 0 {
		t.Error("region_ca_ttl = 20d changed no server's ca_ttl")
	}
}

func TestLoadReportsValidateDiagnostics(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "topology/testdata/invalid/*.hcl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid topology files (%v)", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, want := topology.ParseWith(src, path, topology.Options{CheckFiles: true})
			if len(want) == 0 {
				t.Fatalf("%s parses without diagnostics", path)
			}
			var diags diag.Diagnostics
			l := load(path, nil, &diags)
			if want.HasErrors() != (l == nil) {
				t.Fatalf("load(%s) returned %v, topology's errors: %v", path, l, want.HasErrors())
			}
			if len(diags) != len(want) {
				t.Fatalf("load(%s): %d diagnostics, topology reports %d", path, len(diags), len(want))
			}
			// The details, in order, are what `arbor topology validate`
			// prints before its summary line.
			var details []string
			for i, d := range diags {
				w := want[i]
				prefix := ""
				if w.Subject != nil {
					prefix = w.Subject.Filename + ":" + strconv.Itoa(w.Subject.Start.Line) + ":" + strconv.Itoa(w.Subject.Start.Column) + ": "
				}
				if d.Summary() != prefix+w.Summary {
					t.Errorf("diagnostic %d summary = %q, want %q", i, d.Summary(), prefix+w.Summary)
				}
				if (d.Severity() == diag.SeverityError) != (w.Severity == hcl.DiagError) {
					t.Errorf("diagnostic %d severity = %v, topology says %v", i, d.Severity(), w.Severity)
				}
				details = append(details, d.Detail()+"\n")
			}
			validate := topology.FormatDiagnostics(want, map[string]*hcl.File{path: {Bytes: src}})
			if got := strings.Join(details, ""); got != validate {
				t.Errorf("details:\n%s\nwant what validate prints:\n%s", got, validate)
			}
		})
	}
}

func TestLoadReportsWarnings(t *testing.T) {
	path := filepath.Join(repoRoot(t), "examples/quickstart.hcl")
	_, hdiags := parse(t, path, nil)
	var want []string
	for _, d := range hdiags {
		want = append(want, strings.TrimRight(topology.FormatDiagnostics(hcl.Diagnostics{d}, nil), "\n"))
	}
	if len(want) == 0 {
		t.Fatal("quickstart.hcl has no warnings; the test needs a file with some")
	}
	var diags diag.Diagnostics
	l := load(path, nil, &diags)
	if l == nil {
		t.Fatalf("load(%s) failed: %v", path, diags)
	}
	if diff := cmp.Diff(want, l.warnings); diff != "" {
		t.Errorf("warnings (-validate +got):\n%s", diff)
	}
	if diags.WarningsCount() != len(want) || diags.ErrorsCount() != 0 {
		t.Errorf("load(%s): %d warnings and %d errors, want %d warnings", path, diags.WarningsCount(), diags.ErrorsCount(), len(want))
	}
}

func TestLoadUndeclaredVar(t *testing.T) {
	path := filepath.Join(repoRoot(t), "examples/quickstart.hcl")
	vars := map[string]string{"nope": "1"}
	_, want := topology.ParseFileWith(path, topology.Options{Vars: vars, CheckFiles: true})
	if !want.HasErrors() {
		t.Fatal("an undeclared variable is no error for the topology package")
	}
	var diags diag.Diagnostics
	if l := load(path, vars, &diags); l != nil || diags.ErrorsCount() != len(want.Errs()) {
		t.Fatalf("load(quickstart, nope=1) = %v with %d errors, want nil and %d", l, diags.ErrorsCount(), len(want.Errs()))
	}
	if !strings.Contains(diags.Errors()[0].Detail(), `"nope"`) {
		t.Errorf("the error does not name the variable: %s", diags.Errors()[0].Detail())
	}
}

func TestVarsOf(t *testing.T) {
	ctx := t.Context()
	var diags diag.Diagnostics
	got := varsOf(ctx, types.MapValueMust(types.StringType, map[string]attr.Value{
		"region_ca_ttl": types.StringValue("20d"),
	}), &diags)
	if diags.HasError() || !cmp.Equal(got, map[string]string{"region_ca_ttl": "20d"}) {
		t.Errorf("varsOf({region_ca_ttl = 20d}) = %v, %v", got, diags)
	}
	if got := varsOf(ctx, types.MapNull(types.StringType), &diags); got != nil || diags.HasError() {
		t.Errorf("varsOf(null) = %v, %v, want nil", got, diags)
	}
	varsOf(ctx, types.MapValueMust(types.StringType, map[string]attr.Value{"x": types.StringNull()}), &diags)
	if diags.ErrorsCount() != 1 || !strings.Contains(diags.Errors()[0].Detail(), `vars["x"] is null`) {
		t.Errorf("varsOf({x = null}) diagnostics = %v, want one naming x", diags)
	}
}

func TestLoadMissingFile(t *testing.T) {
	var diags diag.Diagnostics
	path := filepath.Join(t.TempDir(), "nope.hcl")
	if l := load(path, nil, &diags); l != nil || diags.ErrorsCount() != 1 {
		t.Fatalf("load(missing) = %v, %v", l, diags)
	}
	if d := diags.Errors()[0]; !strings.Contains(d.Summary(), path) || strings.Contains(d.Summary(), "\n") {
		t.Errorf("load(missing) summary = %q, want one line naming %s", d.Summary(), path)
	}
}
