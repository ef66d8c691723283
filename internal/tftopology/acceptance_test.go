package tftopology

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	tfresource "github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/arborid/arbor/topology"
)

// TestMain points terraform-plugin-testing at the OpenTofu binary that
// test/tofupeer builds (cached; nothing is downloaded) and at the
// provider's source address, registry.opentofu.org/arborid/arbor.
func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "tftopology")
	if err == nil {
		err = useTofu(tmp)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tftopology tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// useTofu sets the environment of terraform-plugin-testing; tmp holds an
// empty CLI configuration, so that the machine's (TF_CLI_CONFIG_FILE)
// plays no part.
func useTofu(tmp string) error {
	cliConfig := filepath.Join(tmp, "tofurc")
	if err := os.WriteFile(cliConfig, nil, 0o644); err != nil {
		return err
	}
	dir, err := os.Getwd()
	if err != nil {
		return err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			return fmt.Errorf("no go.mod above %s", dir)
		}
		dir = filepath.Dir(dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(dir, "test/tofupeer/build.sh"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("building opentofu with test/tofupeer/build.sh: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	bin := filepath.Join(strings.TrimSpace(string(out)), "tofu")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("test/tofupeer/build.sh printed no tofu binary: %v", err)
	}
	for k, v := range map[string]string{
		"TF_ACC":                    "1",
		"TF_ACC_TERRAFORM_PATH":     bin,
		"TF_ACC_PROVIDER_NAMESPACE": "arborid",
		"TF_ACC_PROVIDER_HOST":      "registry.opentofu.org",
		// No checkpoint calls, no plugin downloads: the provider is
		// reattached in process.
		"CHECKPOINT_DISABLE": "1",
		"TF_CLI_CONFIG_FILE": cliConfig,
	} {
		if err := os.Setenv(k, v); err != nil {
			return err
		}
	}
	return nil
}

// testProvider serves only this package's data sources, so that the tests
// do not depend on the rest of the provider.
type testProvider struct{}

func (testProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "arbor"
}

func (testProvider) Schema(context.Context, provider.SchemaRequest, *provider.SchemaResponse) {}

func (testProvider) Configure(context.Context, provider.ConfigureRequest, *provider.ConfigureResponse) {
}

func (testProvider) Resources(context.Context) []func() resource.Resource { return nil }

func (testProvider) DataSources(context.Context) []func() datasource.DataSource {
	return DataSources()
}

var factories = map[string]func() (tfprotov6.ProviderServer, error){
	"arbor": providerserver.NewProtocol6WithError(testProvider{}),
}

// config is a root module using the arbor provider, followed by body.
func config(body string) string {
	return `terraform {
  required_providers {
    arbor = { source = "arborid/arbor" }
  }
}

` + body
}

// bound fails the whole test binary if t runs longer than d: tofu runs
// under terraform-plugin-testing, which takes no context.
func bound(t *testing.T, d time.Duration) {
	timer := time.AfterFunc(d, func() { panic(fmt.Sprintf("%s ran longer than %s", t.Name(), d)) })
	t.Cleanup(func() { timer.Stop() })
}

// textRegexp matches text as tofu prints it in a diagnostic: words in
// order, whitespace that tofu may rewrap and the box it draws ("│ ")
// between them.
func textRegexp(text string) *regexp.Regexp {
	words := strings.Fields(text)
	for i, w := range words {
		words[i] = regexp.QuoteMeta(w)
	}
	return regexp.MustCompile(strings.Join(words, `[\s│]+`))
}

func parseOnly(t *testing.T, path string) *topology.File {
	f, _ := parse(t, path, nil)
	return f
}

// treeChecks checks every attribute of data source ds, which read path
// with vars, against what the topology package computes for that file.
func treeChecks(t *testing.T, ds, path string, vars map[string]string) []tfresource.TestCheckFunc {
	t.Helper()
	f, hdiags := parse(t, path, vars)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checks := []tfresource.TestCheckFunc{
		tfresource.TestCheckResourceAttr(ds, "trust_domain", f.TrustDomain.Name()),
		tfresource.TestCheckResourceAttr(ds, "root", f.Root().Name),
		tfresource.TestCheckResourceAttr(ds, "content", string(src)),
		tfresource.TestCheckResourceAttr(ds, "servers.%", strconv.Itoa(len(f.Servers))),
		tfresource.TestCheckResourceAttr(ds, "warnings.#", strconv.Itoa(len(hdiags))),
	}
	for i, d := range hdiags {
		w := strings.TrimRight(topology.FormatDiagnostics(hcl.Diagnostics{d}, nil), "\n")
		checks = append(checks, tfresource.TestCheckResourceAttr(ds, fmt.Sprintf("warnings.%d", i), w))
	}
	list := func(prefix string, items []string) {
		checks = append(checks, tfresource.TestCheckResourceAttr(ds, prefix+".#", strconv.Itoa(len(items))))
		for i, it := range items {
			checks = append(checks, tfresource.TestCheckResourceAttr(ds, fmt.Sprintf("%s.%d", prefix, i), it))
		}
	}
	for _, tier := range topology.NewPlan(f).Tiers {
		s, err := f.Server(tier.Server)
		if err != nil {
			t.Fatal(err)
		}
		at := func(attr, want string) tfresource.TestCheckFunc {
			return tfresource.TestCheckResourceAttr(ds, "servers."+s.Name+"."+attr, want)
		}
		budget := ""
		if tier.IssuingBudget > 0 {
			budget = topology.FormatDuration(tier.IssuingBudget)
		}
		checks = append(checks,
			at("name", s.Name),
			at("parent", s.Parent),
			at("depth", strconv.Itoa(tier.Depth)),
			at("spiffe_id", s.SPIFFEID.String()),
			at("address", s.Address),
			at("listen", s.Listen),
			at("admin_socket", s.AdminSocket),
			at("state_dir", s.StateDir),
			at("health_listen", s.HealthListen),
			at("ca_ttl", topology.FormatDuration(s.CATTL)),
			at("x509_svid_ttl", topology.FormatDuration(s.X509SVIDTTL)),
			at("jwt_svid_ttl", topology.FormatDuration(s.JWTSVIDTTL)),
			at("outage_budget", budget),
			at("replicas", strconv.Itoa(s.Replicas)),
			at("entries.#", strconv.Itoa(len(s.Entries))),
		)
		var children []string
		for _, c := range f.Children(s.Name) {
			children = append(children, c.Name)
		}
		list("servers."+s.Name+".children", children)
		if ag := s.Agent; ag != nil {
			cert := ""
			if ag.NodeAttestor.Kind == topology.NodeAttestorX509PoP {
				cert = ag.NodeAttestor.CertificatePath
			}
			checks = append(checks,
				at("agent.spiffe_id", ag.SPIFFEID.String()),
				at("agent.node_attestor", ag.NodeAttestor.Kind),
				at("agent.x509pop_certificate_path", cert),
				at("agent.socket_path", ag.SocketPath),
				at("agent.data_dir", ag.DataDir),
			)
			list("servers."+s.Name+".agent.server_selectors", ag.ServerSelectors)
		} else {
			checks = append(checks, tfresource.TestCheckNoResourceAttr(ds, "servers."+s.Name+".agent.spiffe_id"))
		}
		for i, e := range s.Entries {
			p := fmt.Sprintf("entries.%d.", i)
			ttl := func(own, server time.Duration) string {
				if own == 0 {
					own = server
				}
				return topology.FormatDuration(own)
			}
			checks = append(checks,
				at(p+"name", e.Name),
				at(p+"spiffe_id", e.SPIFFEID.String()),
				at(p+"parent_id", e.ParentID.String()),
				at(p+"x509_svid_ttl", ttl(e.X509SVIDTTL, s.X509SVIDTTL)),
				at(p+"jwt_svid_ttl", ttl(e.JWTSVIDTTL, s.JWTSVIDTTL)),
				at(p+"admin", strconv.FormatBool(e.Admin)),
				at(p+"downstream", strconv.FormatBool(e.Downstream)),
				at(p+"hint", e.Hint),
			)
			list("servers."+s.Name+"."+p+"selectors", e.Selectors)
			list("servers."+s.Name+"."+p+"dns_names", e.DNSNames)
			list("servers."+s.Name+"."+p+"federates_with", e.FederatesWith)
		}
	}
	return checks
}

func TestAccTopologyTree(t *testing.T) {
	bound(t, 3*time.Minute)
	quickstart := filepath.Join(repoRoot(t), "examples/quickstart.hcl")
	if _, hdiags := parse(t, quickstart, nil); len(hdiags) == 0 {
		t.Fatal("quickstart.hcl has no warnings; the test needs a file with some")
	}

	// multi-cloud.hcl's region_ca_ttl sets the CA TTL of its regional
	// tiers: a different value reaches ca_ttl and outage_budget.
	multiCloud := filepath.Join(repoRoot(t), "examples/multi-cloud.hcl")
	vars := map[string]string{"region_ca_ttl": "20d"}
	before, _ := parse(t, multiCloud, nil)
	after, _ := parse(t, multiCloud, vars)
	varChecks := treeChecks(t, "data.arbor_topology.m", multiCloud, vars)
	changed := 0
	for i, s := range after.Servers {
		if s.CATTL == before.Servers[i].CATTL {
			continue
		}
		changed++
		varChecks = append(varChecks,
			tfresource.TestCheckResourceAttr("data.arbor_topology.m", "servers."+s.Name+".ca_ttl", "20d"),
			tfresource.TestCheckResourceAttr("data.arbor_topology.m", "servers."+s.Name+".outage_budget", "10d"))
	}
	if changed == 0 {
		t.Fatal("region_ca_ttl = 20d changes no server of multi-cloud.hcl")
	}

	haRoot := filepath.Join(repoRoot(t), "examples/ha-root.hcl")
	x509pop := false
	for _, s := range servers(parseOnly(t, haRoot)) {
		x509pop = x509pop || (s.Agent != nil && s.Agent.NodeAttestor == topology.NodeAttestorX509PoP && s.Agent.X509PoPCertificatePath != "")
	}
	if !x509pop {
		t.Fatal("ha-root.hcl has no x509pop agent; the test needs one")
	}

	tfresource.ParallelTest(t, tfresource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []tfresource.TestStep{
			{
				Config: config(fmt.Sprintf(`data "arbor_topology" "q" {
  path = %q
}
`, quickstart)),
				Check: tfresource.ComposeAggregateTestCheckFunc(treeChecks(t, "data.arbor_topology.q", quickstart, nil)...),
			},
			{
				Config: config(fmt.Sprintf(`data "arbor_topology" "m" {
  path = %q
  vars = { region_ca_ttl = "20d" }
}
`, multiCloud)),
				Check: tfresource.ComposeAggregateTestCheckFunc(varChecks...),
			},
			{
				// Replicas and a co-located agent attesting with x509pop.
				Config: config(fmt.Sprintf(`data "arbor_topology" "ha" {
  path = %q
}
`, haRoot)),
				Check: tfresource.ComposeAggregateTestCheckFunc(treeChecks(t, "data.arbor_topology.ha", haRoot, nil)...),
			},
		},
	})
}

func TestAccTopologyInvalid(t *testing.T) {
	bound(t, 3*time.Minute)
	dir := t.TempDir()
	syntax := filepath.Join(dir, "syntax.hcl")
	if err := os.WriteFile(syntax, []byte("trust_domain = \"example.org\"\n\nserver \"root\" {\n  listen = \n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A relative path is read from the provider's working directory,
	// which tofu's is outside tests (here it is the package's); the
	// diagnostics name the file as given, as validate does.
	files := []string{
		syntax,
		"../../topology/testdata/invalid/child-ca-ttl.hcl",
		filepath.Join(repoRoot(t), "topology/testdata/invalid/unknown-attribute.hcl"),
		filepath.Join(repoRoot(t), "topology/testdata/invalid/svid-ttl.hcl"),
		// A co-located agent whose parent does not accept its attestor.
		filepath.Join(repoRoot(t), "topology/testdata/invalid/agent-attestor-not-accepted.hcl"),
		// One error diagnostic per problem.
		filepath.Join(repoRoot(t), "topology/testdata/invalid/several-at-once.hcl"),
	}
	var steps []tfresource.TestStep
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, hdiags := topology.ParseWith(src, path, topology.Options{CheckFiles: true})
		if !hdiags.HasErrors() {
			t.Fatalf("%s has no errors", path)
		}
		// Every error, as `arbor topology validate` prints it: its
		// file:line:col, summary, detail and source line.
		var want []string
		for _, d := range hdiags.Errs() {
			hd := d.(*hcl.Diagnostic)
			want = append(want, topology.FormatDiagnostics(hcl.Diagnostics{hd}, map[string]*hcl.File{path: {Bytes: src}}))
		}
		// Each error in order; tofu prints its own lines between them.
		var parts []string
		for _, w := range want {
			parts = append(parts, textRegexp(w).String())
		}
		re := regexp.MustCompile(strings.Join(parts, `[\s\S]*`))
		steps = append(steps, tfresource.TestStep{
			Config: config(fmt.Sprintf(`data "arbor_topology" "bad" {
  path = %q
}
`, path)),
			ExpectError: re,
		})
	}
	tfresource.ParallelTest(t, tfresource.TestCase{ProtoV6ProviderFactories: factories, Steps: steps})
}

func TestAccTierConfig(t *testing.T) {
	bound(t, 3*time.Minute)
	quickstart := filepath.Join(repoRoot(t), "examples/quickstart.hcl")
	f, _ := parse(t, quickstart, nil)
	const node = "leaf-a"
	s, err := f.Server(node)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := topology.Render(f, node)
	if err != nil {
		t.Fatal(err)
	}
	var hclText, jsonText, serverConf, agentConf bytes.Buffer
	if err := rendered.WriteHCL(&hclText); err != nil {
		t.Fatal(err)
	}
	if err := rendered.WriteJSON(&jsonText); err != nil {
		t.Fatal(err)
	}
	spire, err := topology.RenderSPIRE(f, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := spire.WriteServerConf(&serverConf); err != nil {
		t.Fatal(err)
	}
	if err := spire.WriteAgentConf(&agentConf); err != nil {
		t.Fatal(err)
	}
	var checks []tfresource.TestCheckFunc
	for name, want := range map[string]string{"hcl": hclText.String(), "json": jsonText.String(), "spire": serverConf.String()} {
		ds := "data.arbor_tier_config." + name
		checks = append(checks,
			tfresource.TestCheckResourceAttr(ds, "server_config", want),
			tfresource.TestCheckResourceAttr(ds, "admin_socket", s.AdminSocket),
			tfresource.TestCheckResourceAttr(ds, "state_dir", s.StateDir),
			tfresource.TestCheckResourceAttr(ds, "listen", s.Listen),
			tfresource.TestCheckResourceAttr(ds, "address", s.Address),
			tfresource.TestCheckResourceAttr(ds, "spiffe_id", s.SPIFFEID.String()),
			tfresource.TestCheckResourceAttr(ds, "parent", s.Parent),
			tfresource.TestCheckResourceAttr(ds, "agent_spiffe_id", s.Agent.SPIFFEID.String()),
			tfresource.TestCheckResourceAttr(ds, "agent_socket_path", s.Agent.SocketPath),
		)
	}
	checks = append(checks,
		tfresource.TestCheckResourceAttr("data.arbor_tier_config.spire", "agent_config", agentConf.String()),
		// The hcl and json agent parts hold the agent's socket path as
		// the whole render does.
		tfresource.TestMatchResourceAttr("data.arbor_tier_config.hcl", "agent_config",
			regexp.MustCompile(`(?m)^agent \{\n(.*\n)*  socket_path += `+regexp.QuoteMeta(strconv.Quote(s.Agent.SocketPath)))),
		tfresource.TestMatchResourceAttr("data.arbor_tier_config.json", "agent_config",
			regexp.MustCompile(`"socket_path": `+regexp.QuoteMeta(strconv.Quote(s.Agent.SocketPath)))),
		// The root has no co-located agent.
		tfresource.TestCheckResourceAttr("data.arbor_tier_config.root", "agent_config", ""),
		tfresource.TestCheckResourceAttr("data.arbor_tier_config.root", "agent_spiffe_id", ""),
	)

	_, unknown := f.Replica("leaf-c")
	if unknown == nil {
		t.Fatal("quickstart.hcl has a node leaf-c")
	}
	tfresource.ParallelTest(t, tfresource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []tfresource.TestStep{
			// The failing steps first: the test's final destroy runs with the
			// last step's configuration.
			{
				Config: config(fmt.Sprintf(`data "arbor_tier_config" "nope" {
  path = %q
  node = "leaf-c"
}
`, quickstart)),
				ExpectError: textRegexp(unknown.Error()),
			},
			{
				Config: config(fmt.Sprintf(`data "arbor_tier_config" "yaml" {
  path   = %q
  node   = "leaf-a"
  format = "yaml"
}
`, quickstart)),
				ExpectError: textRegexp(checkFormat("yaml").Error()),
			},
			{
				Config: config(fmt.Sprintf(`locals {
  path = %q
}

data "arbor_tier_config" "hcl" {
  path = local.path
  node = %q
}

data "arbor_tier_config" "json" {
  path   = local.path
  node   = %[2]q
  format = "json"
}

data "arbor_tier_config" "spire" {
  path   = local.path
  node   = %[2]q
  format = "spire"
}

data "arbor_tier_config" "root" {
  path = local.path
  node = "root"
}
`, quickstart, node)),
				Check: tfresource.ComposeAggregateTestCheckFunc(checks...),
			},
		},
	})
}
