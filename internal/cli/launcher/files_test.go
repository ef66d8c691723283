package launcher

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arborid/arbor/topology"
)

// parse parses a topology written in the test; path places it (state
// directories default to .arbor/<name> beside it).
func parse(t *testing.T, path, src string) *topology.File {
	t.Helper()
	f, diags := topology.Parse([]byte(src), path)
	if diags.HasErrors() {
		t.Fatalf("Parse(%s):\n%s", path, topology.FormatDiagnostics(diags, nil))
	}
	return f
}

// tree is a topology of trust domain td whose servers are name=parent
// pairs ("root=" for the root), listening on port, port+1, ...
func tree(t *testing.T, path, td string, port int, servers ...string) *topology.File {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "trust_domain = %q\n", td)
	depth := map[string]int{}
	for i, s := range servers {
		name, parent, _ := strings.Cut(s, "=")
		if parent != "" {
			depth[name] = depth[parent] + 1
		}
		ttl := 48 >> depth[name] // each child CA lives at most half its parent's
		fmt.Fprintf(&b, "server %q {\n  listen = \"127.0.0.1:%d\"\n  health_listen = \"off\"\n  ca_ttl = \"%dh\"\n", name, port+i, ttl)
		if parent != "" {
			fmt.Fprintf(&b, "  parent = %q\n", parent)
		}
		b.WriteString("}\n")
	}
	return parse(t, path, b.String())
}

func TestResolveTier(t *testing.T) {
	org := tree(t, "/up/org/org.hcl", "example.org", 9001, "root=", "regional=root", "leaf=regional")
	partner := tree(t, "/up/partner/partner.hcl", "partner.example", 9101, "root=", "leaf=root")
	both := []*topology.File{org, partner}
	ha := parse(t, "/up/ha/ha.hcl", `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:9001"
  health_listen = "off"
  replicas      = 3
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
`)
	tests := []struct {
		files    []*topology.File
		name     string
		wantFile *topology.File
		wantErr  string
	}{
		{both, "regional", org, ""},
		{both, "example.org/leaf", org, ""},
		{both, "partner.example/leaf", partner, ""},
		{both, "partner.example/root", partner, ""},
		{[]*topology.File{partner}, "leaf", partner, ""},
		{[]*topology.File{org}, "example.org/leaf", org, ""},
		{both, "leaf", nil, `2 files declare a server "leaf": say which with example.org/leaf or partner.example/leaf`},
		{both, "root", nil, "example.org/root or partner.example/root"},
		{both, "partner.example/regional", nil, `no server "regional" in trust domain partner.example (/up/partner/partner.hcl)`},
		{both, "other.example/leaf", nil, `no trust domain "other.example" among the files (example.org, partner.example)`},
		{both, "nope", nil, `no server "nope" in any of the files`},
		{[]*topology.File{org}, "nope", nil, `no server "nope" in /up/org/org.hcl`},
		{[]*topology.File{ha}, "root/2", ha, ""},
		{[]*topology.File{ha}, "root/1", ha, ""},
		{[]*topology.File{ha, partner}, "example.org/root/3", ha, ""},
		{[]*topology.File{ha}, "root/4", nil, `server "root" has 3 replicas, named root (replica 1) to root/3`},
		{[]*topology.File{ha, partner}, "example.org/root/4", nil, `trust domain example.org (/up/ha/ha.hcl): topology: unknown replica "root/4"`},
		{[]*topology.File{org}, "leaf/2", nil, `server "leaf" runs one process (replicas = 1)`},
	}
	for _, tt := range tests {
		f, s, err := resolveTier(tt.files, tt.name)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("resolveTier(%q) = %v, want an error with %q", tt.name, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("resolveTier(%q) = %v", tt.name, err)
		case f != tt.wantFile || s.Node() != topology.NodeName(wantNode(tt.name, f)):
			t.Errorf("resolveTier(%q) = server %q of %s, want it of %s", tt.name, s.Name, f.Path, tt.wantFile.Path)
		}
	}
}

// wantNode is the block and replica a --stop NAME of f names: NAME, TD/NAME,
// NAME/K or TD/NAME/K.
func wantNode(name string, f *topology.File) (string, int) {
	node := strings.TrimPrefix(name, f.TrustDomain.Name()+"/")
	block, k, _ := topology.SplitNode(node)
	return block, k
}

func TestCheckFiles(t *testing.T) {
	org := tree(t, "/up/org/org.hcl", "example.org", 9001, "root=", "leaf=root")
	tests := []struct {
		name    string
		other   *topology.File
		wantErr string // "" for none
	}{
		{"another trust domain", tree(t, "/up/partner/partner.hcl", "partner.example", 9101, "root=", "leaf=root"), ""},
		{"the same trust domain", tree(t, "/up/again/org.hcl", "example.org", 9101, "root="),
			"launcher: /up/org/org.hcl and /up/again/org.hcl both declare trust domain example.org; give arbor up one file per trust domain"},
		{"default state_dirs of files side by side", tree(t, "/up/org/partner.hcl", "partner.example", 9101, "root="), ""},
		{"a state_dir of the other file", parse(t, "/up/org/partner.hcl", `trust_domain = "partner.example"
server "root" {
  listen        = "127.0.0.1:9101"
  health_listen = "off"
  state_dir     = ".arbor/org/root"
}`), `launcher: server "root" of /up/org/org.hcl and server "root" of /up/org/partner.hcl share state_dir /up/org/.arbor/org/root; set another state_dir in one of them`},
		{"a listen port taken", tree(t, "/up/partner/partner.hcl", "partner.example", 9002, "root="),
			`launcher: server "leaf" of /up/org/org.hcl (listen) and server "root" of /up/partner/partner.hcl (listen) both listen on 127.0.0.1:9002; change one of them`},
		{"every interface on a port taken", parse(t, "/up/partner/partner.hcl", `trust_domain = "partner.example"
server "root" {
  listen        = "127.0.0.1:9101"
  health_listen = "0.0.0.0:9001"
}`), `both listen on 0.0.0.0:9001`},
		{"a bundle endpoint on a port taken", parse(t, "/up/partner/partner.hcl", `trust_domain = "partner.example"
server "root" {
  listen        = "127.0.0.1:9101"
  health_listen = "off"
  bundle_endpoint {
    listen = "127.0.0.1:9001"
  }
}`), `(bundle_endpoint listen) both listen on 127.0.0.1:9001`},
		{"a replica's derived port taken", parse(t, "/up/partner/partner.hcl", `trust_domain = "partner.example"
server "root" {
  listen        = "127.0.0.1:9000"
  health_listen = "off"
  replicas      = 3
  datastore "postgres" { dsn = "postgres://db/p" }
}`), `launcher: server "root" of /up/org/org.hcl (listen) and server "root/2" of /up/partner/partner.hcl (listen) both listen on 127.0.0.1:9001`},
		{"the same port on another address", parse(t, "/up/partner/partner.hcl", `trust_domain = "partner.example"
server "root" {
  listen        = "127.0.0.2:9001"
  health_listen = "off"
}`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkFiles([]*topology.File{org, tt.other})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("checkFiles = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("checkFiles = %v, want an error with %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("checkFiles = %q, want one line", err)
			}
		})
	}
	if err := checkFiles([]*topology.File{org}); err != nil {
		t.Errorf("checkFiles(one file) = %v", err)
	}
}

// TestFederationExamples: examples/federation's two files validate, run
// side by side (and beside examples/quickstart.hcl), and federate with each
// other the way arbor up exchanges bundles for: https_spiffe to the other
// root's bundle endpoint and SVID, each root with /metrics for the age.
func TestFederationExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "examples")
	var files []*topology.File
	for _, name := range []string{"example-org.hcl", "partner.hcl"} {
		f, diags := topology.ParseFile(filepath.Join(dir, "federation", name))
		if diags.HasErrors() {
			t.Fatalf("ParseFile(%s):\n%s", name, topology.FormatDiagnostics(diags, nil))
		}
		files = append(files, f)
	}
	if err := checkFiles(files); err != nil {
		t.Fatalf("checkFiles(examples/federation) = %v", err)
	}
	feds := localFederations(files)
	if len(feds) != 2 {
		t.Fatalf("localFederations = %d federations, want each file's with the other", len(feds))
	}
	for _, lf := range feds {
		root := lf.to.Root()
		wantID := "spiffe://" + lf.to.TrustDomain.Name() + "/spire/server"
		switch {
		case lf.fed.Profile != topology.ProfileHTTPSSPIFFE || lf.fed.EndpointSPIFFEID.String() != wantID:
			t.Errorf("%s federates with %s over %s as %s, want https_spiffe as %s", lf.from.Path, lf.fed.TrustDomain, lf.fed.Profile, lf.fed.EndpointSPIFFEID, wantID)
		case endpointServer(lf.to, lf.fed.BundleEndpoint) != root:
			t.Errorf("%s names %s, not the bundle endpoint of %s's root", lf.from.Path, lf.fed.BundleEndpoint, lf.to.Path)
		case lf.from.Fetcher(lf.fed).HealthListen == "":
			t.Errorf("%s's fetching server has no health_listen: its status lines could not show the bundle's age", lf.from.Path)
		}
	}
	quick, diags := topology.ParseFile(filepath.Join(dir, "quickstart.hcl"))
	if diags.HasErrors() {
		t.Fatal(topology.FormatDiagnostics(diags, nil))
	}
	for _, f := range files {
		for _, s := range f.Servers {
			for _, q := range quick.Servers {
				for _, a := range []string{s.Listen, s.HealthListen} {
					for _, b := range []string{q.Listen, q.HealthListen} {
						if sameListener(a, b) {
							t.Errorf("%s's %s listens on %s, as quickstart.hcl's %s does: both examples could not run at once", f.Path, s.Name, a, q.Name)
						}
					}
				}
			}
		}
	}
}

// TestDemoFederatesWith: a leaf's demo federates with a trust domain run
// here only when that trust domain's bundle reaches the leaf: its file's
// federation block is fetched by the leaf or a server above it.
func TestDemoFederatesWith(t *testing.T) {
	org := parse(t, "/up/org/org.hcl", `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:9001"
  health_listen = "off"
  ca_ttl        = "48h"
}
server "regional-a" {
  parent        = "root"
  listen        = "127.0.0.1:9002"
  health_listen = "off"
  ca_ttl        = "24h"
}
server "regional-b" {
  parent        = "root"
  listen        = "127.0.0.1:9003"
  health_listen = "off"
  ca_ttl        = "24h"
}
server "leaf-a" {
  parent        = "regional-a"
  listen        = "127.0.0.1:9004"
  health_listen = "off"
  ca_ttl        = "12h"
}
server "leaf-b" {
  parent        = "regional-b"
  listen        = "127.0.0.1:9005"
  health_listen = "off"
  ca_ttl        = "12h"
}
federation "partner.example" {
  bundle_endpoint = "https://127.0.0.1:9102"
  fetched_by      = "regional-a"
}
federation "payments.example" {
  bundle_endpoint = "https://bundle.payments.example"
}`)
	partner := tree(t, "/up/partner/partner.hcl", "partner.example", 9101, "root=")
	l := &launcher{files: []*topology.File{org, partner}}
	tests := []struct {
		server string
		want   []string
	}{
		{"leaf-a", []string{"partner.example"}},
		{"regional-a", []string{"partner.example"}},
		{"leaf-b", nil}, // payments.example is not run here
		{"root", nil},
	}
	for _, tt := range tests {
		s, err := org.Server(tt.server)
		if err != nil {
			t.Fatal(err)
		}
		got := l.runFederatedWith(&liveTier{f: org, srv: s})
		if !slices.Equal(got, tt.want) {
			t.Errorf("runFederatedWith(%s) = %q, want %q", tt.server, got, tt.want)
		}
	}
}
