package topology

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// spireFiles are topology files, besides the examples, whose SPIRE
// rendering is golden-tested: they cover the vault and spire upstreams,
// memory keys, a JWT key type of its own, a join token in the file, and the
// aws_iid and k8s_psat attestors.
var spireFiles = []string{"vault-root.hcl", "spire-upstream-root.hcl", "bundle-endpoint.hcl", "federation-fetched-by.hcl", "cloud-attestors.hcl"}

// spireCase is one node of one topology file to render as SPIRE config.
type spireCase struct {
	name   string // golden file prefix: FILE.spire.NODE
	golden string // directory of the golden files
	file   *File
	node   string
}

func spireCases(t *testing.T) []spireCase {
	t.Helper()
	var out []spireCase
	for _, name := range exampleFiles {
		f := parseExample(t, name)
		for _, s := range f.Servers {
			out = append(out, spireCase{strings.TrimSuffix(name, ".hcl") + ".spire." + s.Name, filepath.Join("testdata", "golden"), f, s.Name})
		}
	}
	for _, name := range spireFiles {
		f, diags := ParseFile(filepath.Join("testdata", "spire", name))
		if diags.HasErrors() {
			t.Fatalf("ParseFile(%s): %s", name, FormatDiagnostics(diags, nil))
		}
		for _, s := range f.Servers {
			out = append(out, spireCase{strings.TrimSuffix(name, ".hcl") + ".spire." + s.Name, filepath.Join("testdata", "spire"), f, s.Name})
		}
	}
	return out
}

// renderSPIREFiles renders both files of a case; agent is nil when the
// node has no co-located agent.
func renderSPIREFiles(t *testing.T, c spireCase) (server, agent []byte) {
	t.Helper()
	cfg, err := RenderSPIRE(c.file, c.node)
	if err != nil {
		t.Fatalf("RenderSPIRE(%s, %s): %v", c.file.Path, c.node, err)
	}
	var b bytes.Buffer
	if err := cfg.WriteServerConf(&b); err != nil {
		t.Fatal(err)
	}
	server = bytes.Clone(b.Bytes())
	if cfg.Agent != nil {
		b.Reset()
		if err := cfg.WriteAgentConf(&b); err != nil {
			t.Fatal(err)
		}
		agent = bytes.Clone(b.Bytes())
	}
	return server, agent
}

func TestRenderSPIREGolden(t *testing.T) {
	for _, c := range spireCases(t) {
		t.Run(c.name, func(t *testing.T) {
			server, agent := renderSPIREFiles(t, c)
			checkGolden(t, filepath.Join(c.golden, c.name+".server.conf"), server)
			s, _ := c.file.Server(c.node)
			wantAgent := s.Parent != "" || (s.Upstream != nil && s.Upstream.SPIRE != nil)
			if (agent != nil) != wantAgent {
				t.Fatalf("RenderSPIRE(%s).Agent present = %v, want %v", c.node, agent != nil, wantAgent)
			}
			if agent != nil {
				checkGolden(t, filepath.Join(c.golden, c.name+".agent.conf"), agent)
			}
		})
	}
}

// TestRenderSPIREValues checks the facts a SPIRE peer depends on, on one
// downstream node: Go durations, the parent as UpstreamAuthority "spire"
// reached through the agent's socket, and the agent pointed at the parent.
func TestRenderSPIREValues(t *testing.T) {
	f := parseExample(t, "multi-cloud.hcl")
	cfg, err := RenderSPIRE(f, "aws-us-east-1a")
	if err != nil {
		t.Fatal(err)
	}
	server := flattenBlock(cfg.Server, "")
	agent := flattenBlock(cfg.Agent, "")
	for _, tt := range []struct {
		got  map[string]string
		key  string
		want string
	}{
		{server, "server.ca_ttl", `"168h"`},
		{server, "server.bind_port", "8081"},
		{server, "server.socket_path", `"../examples/.arbor/multi-cloud/aws-us-east-1a/admin.sock"`},
		{server, "plugins.UpstreamAuthority[spire].plugin_data.server_address", `"arbor.us-east-1.aws.example.org"`},
		{server, "plugins.UpstreamAuthority[spire].plugin_data.server_port", `"8081"`},
		{server, "plugins.UpstreamAuthority[spire].plugin_data.workload_api_socket", `"../examples/.arbor/multi-cloud/aws-us-east-1a/agent.sock"`},
		{server, "plugins.DataStore[sql].plugin_data.database_type", `"sqlite3"`},
		{agent, "agent.server_address", `"arbor.us-east-1.aws.example.org"`},
		{agent, "agent.server_port", "8081"},
		{agent, "agent.socket_path", `"../examples/.arbor/multi-cloud/aws-us-east-1a/agent.sock"`},
		{agent, "plugins.NodeAttestor[k8s_psat].plugin_data.cluster", `"eks-us-east-1a"`},
		{agent, "plugins.NodeAttestor[k8s_psat].plugin_data.token_path", `"/var/run/secrets/tokens/spire-agent"`},
	} {
		if tt.got[tt.key] != tt.want {
			t.Errorf("RenderSPIRE(aws-us-east-1a) %s = %s, want %s", tt.key, tt.got[tt.key], tt.want)
		}
	}
	var b bytes.Buffer
	rootCfg, err := RenderSPIRE(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	if rootCfg.Agent != nil || rootCfg.WriteAgentConf(&b) == nil {
		t.Errorf("RenderSPIRE(root) has an agent.conf; a root without upstream \"spire\" has no co-located agent")
	}
	if _, err := RenderSPIRE(f, "nope"); err == nil {
		t.Errorf("RenderSPIRE(nope) succeeded, want ErrUnknownServer")
	}
}

func flattenBlock(b *Block, prefix string) map[string]string {
	out := map[string]string{}
	for _, a := range b.Attrs {
		out[prefix+a.Name] = hclValue(a.Value)
	}
	for _, c := range b.Blocks {
		p := prefix + c.Type
		if len(c.Labels) > 0 {
			p += "[" + strings.Join(c.Labels, ",") + "]"
		}
		for k, v := range flattenBlock(c, p+".") {
			out[k] = v
		}
	}
	return out
}

var (
	spireBinOnce sync.Once
	spireBinDir  string
	spireBinErr  error
)

// spireBin returns the directory holding spire-server and spire-agent
// v1.13.3, building them with test/spirepeer/build.sh the first time.
func spireBin(t *testing.T) string {
	t.Helper()
	spireBinOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, "bash", filepath.Join("..", "test", "spirepeer", "build.sh"))
		cmd.Stdout = &out
		cmd.Stderr = os.Stderr // the first build takes minutes: show progress
		if spireBinErr = cmd.Run(); spireBinErr != nil {
			return
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		spireBinDir = strings.TrimSpace(lines[len(lines)-1])
	})
	if spireBinErr != nil {
		t.Fatalf("building SPIRE peers: %v", spireBinErr)
	}
	return spireBinDir
}

// spireValidate runs `PROGRAM validate -config FILE` on conf.
func spireValidate(t *testing.T, program string, conf []byte) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spire.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(spireBin(t), program), "validate", "-config", path).CombinedOutput()
	return string(out), err
}

// TestRenderSPIREAcceptedBySPIRE feeds every rendered server.conf and
// agent.conf to the real spire-server and spire-agent v1.13.3 `validate`,
// which parse the file, reject unknown keys and check durations, key
// types, ports and the trust domain.
func TestRenderSPIREAcceptedBySPIRE(t *testing.T) {
	for _, c := range spireCases(t) {
		t.Run(c.name, func(t *testing.T) {
			server, agent := renderSPIREFiles(t, c)
			if out, err := spireValidate(t, "spire-server", server); err != nil || !strings.Contains(out, "configuration file is valid") {
				t.Errorf("spire-server validate rejects the server.conf of %s: %v\n%s\n%s", c.node, err, out, server)
			}
			if agent == nil {
				return
			}
			if out, err := spireValidate(t, "spire-agent", agent); err != nil || !strings.Contains(out, "configuration file is valid") {
				t.Errorf("spire-agent validate rejects the agent.conf of %s: %v\n%s\n%s", c.node, err, out, agent)
			}
		})
	}
	// The check has teeth: the same validator rejects a day-unit duration
	// (which arbor accepts and SPIRE does not) and an unknown key.
	f := parseExample(t, "multi-cloud.hcl")
	server, agent := renderSPIREFiles(t, spireCase{file: f, node: "aws-us-east-1"})
	for _, bad := range []struct{ program, conf string }{
		{"spire-server", strings.Replace(string(server), `"720h"`, `"30d"`, 1)},
		{"spire-server", strings.Replace(string(server), "ca_key_type", "ca_key_typo", 1)},
		{"spire-agent", strings.Replace(string(agent), "trust_domain", "trust_domian", 1)},
	} {
		if bad.conf == string(server) || bad.conf == string(agent) {
			t.Fatalf("negative control did not change the file")
		}
		if out, err := spireValidate(t, bad.program, []byte(bad.conf)); err == nil {
			t.Errorf("%s validate accepts a broken file:\n%s", bad.program, out)
		}
	}
}

// spireDocDir is the doc folder of the SPIRE v1.13.3 module.
func spireDocDir(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/spiffe/spire@"+SPIREVersion)
	cmd.Dir = t.TempDir() // outside the arbor module: go.mod stays untouched
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download spire: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download spire: no Dir in %s (%v)", out, err)
	}
	return filepath.Join(mod.Dir, "doc")
}

var docKey = regexp.MustCompile("^`?([a-z0-9_]+)`?")

// documentedKeys returns the names in the first column of every table of
// a SPIRE plugin document.
func documentedKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, line := range strings.Split(string(src), "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cell := strings.TrimSpace(strings.SplitN(strings.TrimPrefix(line, "|"), "|", 2)[0])
		if m := docKey.FindStringSubmatch(cell); m != nil {
			keys[m[1]] = true
		}
	}
	return keys
}

// TestRenderSPIREPluginDataDocumented checks what `validate` does not:
// every plugin the rendered files name has a document in SPIRE v1.13.3,
// and every plugin_data key is in that document's tables.
func TestRenderSPIREPluginDataDocumented(t *testing.T) {
	docs := spireDocDir(t)
	checked := map[string]bool{}
	for _, c := range spireCases(t) {
		server, agent := renderSPIREFiles(t, c)
		for _, conf := range []struct {
			side string
			src  []byte
		}{{"server", server}, {"agent", agent}} {
			if conf.src == nil {
				continue
			}
			f, diags := hclsyntax.ParseConfig(conf.src, c.name+"."+conf.side+".conf", hcl.InitialPos)
			if diags.HasErrors() {
				t.Fatalf("%s %s.conf does not parse: %v", c.name, conf.side, diags)
			}
			for _, plugins := range f.Body.(*hclsyntax.Body).Blocks {
				if plugins.Type != "plugins" {
					continue
				}
				for _, p := range plugins.Body.Blocks {
					// join_token is documented as "jointoken", aws_pca as "aws_pca".
					base := "plugin_" + conf.side + "_" + strings.ToLower(p.Type) + "_"
					doc := filepath.Join(docs, base+p.Labels[0]+".md")
					if _, err := os.Stat(doc); err != nil {
						doc = filepath.Join(docs, base+strings.ReplaceAll(p.Labels[0], "_", "")+".md")
					}
					known := documentedKeys(t, doc)
					for _, key := range pluginDataKeys(p.Body) {
						id := conf.side + " " + p.Type + " " + p.Labels[0] + " " + key
						checked[id] = true
						name := key[strings.LastIndex(key, ".")+1:]
						if known[name] {
							continue
						}
						if src, ok := undocumentedKeys[id]; ok && sourceDeclares(t, filepath.Join(filepath.Dir(docs), src), name) {
							continue
						}
						t.Errorf("%s %s.conf: %s %q plugin_data key %q is not documented in %s", c.name, conf.side, p.Type, p.Labels[0], key, doc)
					}
				}
			}
		}
	}
	// Every kind of plugin attribute the renderer writes was seen.
	for _, want := range []string{
		"server DataStore sql connection_string", "server KeyManager disk keys_path", "server NodeAttestor x509pop ca_bundle_paths",
		"server UpstreamAuthority spire workload_api_socket", "server UpstreamAuthority vault approle_auth.approle_id",
		"server UpstreamAuthority aws_pca certificate_authority_arn", "server UpstreamAuthority disk cert_file_path",
		"agent NodeAttestor x509pop intermediates_path", "agent KeyManager disk directory",
		"server NodeAttestor aws_iid access_key_id", "server NodeAttestor aws_iid assume_role", "server NodeAttestor aws_iid partition",
		"server NodeAttestor aws_iid skip_block_device", "server NodeAttestor aws_iid disable_instance_profile_selectors",
		"server NodeAttestor aws_iid account_ids_for_local_validation", "server NodeAttestor aws_iid agent_path_template",
		"server NodeAttestor k8s_psat clusters", "server NodeAttestor k8s_psat clusters.*.service_account_allow_list",
		"server NodeAttestor k8s_psat clusters.*.audience", "server NodeAttestor k8s_psat clusters.*.kube_config_file",
		"server NodeAttestor k8s_psat clusters.*.allowed_node_label_keys", "server NodeAttestor k8s_psat clusters.*.allowed_pod_label_keys",
		"agent NodeAttestor aws_iid ec2_metadata_endpoint", "agent NodeAttestor k8s_psat cluster", "agent NodeAttestor k8s_psat token_path",
	} {
		if !checked[want] {
			var all []string
			for k := range checked {
				all = append(all, k)
			}
			sort.Strings(all)
			t.Errorf("no rendered file has %q; seen:\n%s", want, strings.Join(all, "\n"))
		}
	}
}

// undocumentedKeys are plugin_data keys that SPIRE v1.13.3 reads but its
// plugin document's tables leave out, each with the source file (in the
// SPIRE module) whose hcl tags declare it; the test checks that they do.
var undocumentedKeys = map[string]string{
	"server NodeAttestor aws_iid agent_path_template":              "pkg/server/plugin/nodeattestor/awsiid/iid.go",
	"server NodeAttestor aws_iid account_ids_for_local_validation": "pkg/server/plugin/nodeattestor/awsiid/iid.go",
}

// sourceDeclares reports whether the Go file at path has a field tagged
// hcl:"name".
func sourceDeclares(t *testing.T, path, name string) bool {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(src, []byte(`hcl:"`+name+`"`))
}

// pluginDataKeys lists the attributes of a plugin's plugin_data block,
// nested blocks as BLOCK then BLOCK.ATTR, and the fields of a map of
// objects (k8s_psat's clusters = { "NAME" = { ... } }) as ATTR.*.FIELD.
func pluginDataKeys(plugin *hclsyntax.Body) []string {
	var out []string
	var walk func(b *hclsyntax.Body, prefix string)
	walk = func(b *hclsyntax.Body, prefix string) {
		for name, attr := range b.Attributes {
			out = append(out, prefix+name)
			m, ok := attr.Expr.(*hclsyntax.ObjectConsExpr)
			if !ok {
				continue
			}
			for _, item := range m.Items {
				if fields, ok := item.ValueExpr.(*hclsyntax.ObjectConsExpr); ok {
					for _, f := range fields.Items {
						if key := hcl.ExprAsKeyword(f.KeyExpr); key != "" {
							out = append(out, prefix+name+".*."+key)
						}
					}
				}
			}
		}
		for _, nb := range b.Blocks {
			out = append(out, prefix+nb.Type)
			walk(nb.Body, prefix+nb.Type+".")
		}
	}
	for _, pd := range plugin.Blocks {
		if pd.Type == "plugin_data" {
			walk(pd.Body, "")
		}
	}
	return out
}

// TestRenderSPIRERootRuns starts the real spire-server v1.13.3 with the
// rendered server.conf of a root (SQLite datastore, disk key manager, join
// token and x509pop attestors) and waits until it answers its health
// check on the rendered admin socket: the file does not just parse, it
// runs.
func TestRenderSPIRERootRuns(t *testing.T) {
	dir, addr := spireRunDir(t)
	// x509pop needs a CA bundle file to load.
	ca := testCACertPEM(t)
	if err := os.WriteFile(filepath.Join(dir, "agent-ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	f := runSPIREServer(t, dir, `trust_domain = "example.org"
server "root" {
  listen        = "`+addr+`"
  health_listen = ""
  ca_ttl        = "48h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  node_attestor "x509pop" { ca_bundle_paths = ["agent-ca.pem"] }
}
`, nil)
	// The rendered datastore and key manager paths are the ones in use.
	for _, p := range []string{f.Servers[0].Datastore.Path, filepath.Join(f.Servers[0].StateDir, "keys.json")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("spire-server did not create %s: %v", p, err)
		}
	}
}

// TestRenderSPIRECloudAttestorsRun starts the real spire-server with the
// rendered aws_iid and k8s_psat plugins, every SPIRE attribute of both set:
// SPIRE's plugins configure themselves from the rendered plugin_data (which
// `validate` does not read) without calling AWS or Kubernetes. The secret
// access key reaches spire-server the way the rendered note says, through
// AWS_SECRET_ACCESS_KEY: SPIRE refuses an access key ID alone.
func TestRenderSPIRECloudAttestorsRun(t *testing.T) {
	dir, addr := spireRunDir(t)
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runSPIREServer(t, dir, `trust_domain = "example.org"
server "root" {
  listen        = "`+addr+`"
  health_listen = ""
  ca_ttl        = "48h"
  node_attestor "aws_iid" {
    access_key_id                      = "AKIAIOSFODNN7EXAMPLE"
    secret_access_key                  = "never-rendered"
    assume_role                        = "spire-server-delegate"
    partition                          = "aws-us-gov"
    skip_block_device                  = true
    disable_instance_profile_selectors = true
    account_ids_for_local_validation   = ["123456789012"]
    agent_path_template                = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Tags.role | lower }}/{{ .InstanceID }}"
  }
  node_attestor "k8s_psat" {
    cluster "prod" {
      service_account_allow_list = ["spire:spire-agent"]
      kube_config_file           = "kubeconfig"
      allowed_node_label_keys    = ["topology.kubernetes.io/zone"]
      allowed_pod_label_keys     = ["app"]
    }
    cluster "in-cluster" {
      service_account_allow_list = ["spire:spire-agent"]
      audience                   = []
    }
  }
}
`, []string{"AWS_SECRET_ACCESS_KEY=never-rendered"})
}

// spireRunDir returns a short temporary directory (the admin socket path
// is limited) and a free 127.0.0.1 address for a spire-server to listen on.
func spireRunDir(t *testing.T) (dir, addr string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "arbor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	return dir, addr
}

// runSPIREServer parses the topology src (a root) in dir, starts the real
// spire-server with its rendered server.conf and the extra environment
// env, and waits until it answers its health check on the rendered admin
// socket. The server runs until the test ends.
func runSPIREServer(t *testing.T, dir, src string, env []string) *File {
	t.Helper()
	return runSPIREServerEdited(t, dir, src, env, nil)
}

// runSPIREServerEdited is runSPIREServer with edit applied to the rendered
// server.conf first, as a user follows a rendered note (a secret the
// rendering leaves out).
func runSPIREServerEdited(t *testing.T, dir, src string, env []string, edit func(string) string) *File {
	t.Helper()
	path := filepath.Join(dir, "t.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := ParseFile(path)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	server, _ := renderSPIREFiles(t, spireCase{file: f, node: "root"})
	if edit != nil {
		server = []byte(edit(string(server)))
	}
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, server, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.Servers[0].StateDir, 0o700); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var logs bytes.Buffer
	run := exec.CommandContext(ctx, filepath.Join(spireBin(t), "spire-server"), "run", "-config", conf)
	run.Stdout, run.Stderr = &logs, &logs
	run.Env = append(os.Environ(), env...)
	if err := run.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	// exited is closed when the process has ended, waitErr set before: a
	// channel read once would leave the cleanup waiting forever after the
	// loop below saw the exit.
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = run.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		run.Process.Kill()
		<-exited
		cancel()
	})

	socket := f.Servers[0].AdminSocket
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.CommandContext(ctx, filepath.Join(spireBin(t), "spire-server"), "healthcheck", "-socketPath", socket).CombinedOutput()
		if err == nil && strings.Contains(string(out), "Server is healthy") {
			return f
		}
		select {
		case <-exited:
			t.Fatalf("spire-server exited with the rendered server.conf: %v\n%s\n%s", waitErr, logs.String(), server)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-server not healthy within a minute on %s: %s\n%s", socket, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not a timing assumption
	}
}

// testCACertPEM returns a self-signed CA certificate in PEM.
func testCACertPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "agent CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestRenderSPIREGCPAzureAttestorsRun starts the real spire-server with the
// rendered gcp_iit and azure_msi plugins (two tenants with app credentials,
// a resource_id of their own, SPIRE's agent path templates): both configure
// themselves from the rendered plugin_data without calling Google or Azure,
// once each tenant's app_secret is added as the rendered note says (the
// rendering never holds it). A tenant without app credentials cannot be
// run off Azure: SPIRE v1.13.3 then reads its own VM's subscription from
// the instance metadata service at start (and panics without one).
func TestRenderSPIREGCPAzureAttestorsRun(t *testing.T) {
	dir, addr := spireRunDir(t)
	addSecret := func(conf string) string {
		if n := strings.Count(conf, "# azure_msi: tenant "); n < 2 {
			t.Errorf("the rendered server.conf has %d azure_msi tenant notes, want the app_secret note of both:\n%s", n, conf)
		}
		return regexp.MustCompile(`(?m)^(\s*)app_id(\s*)= ("[^"]*")$`).ReplaceAllString(conf, "${1}app_id$2= $3\n${1}app_secret = \"not-a-secret\"")
	}
	runSPIREServerEdited(t, dir, `trust_domain = "example.org"
server "root" {
  listen        = "`+addr+`"
  health_listen = ""
  ca_ttl        = "48h"
  node_attestor "gcp_iit" {
    projectid_allow_list    = ["arbor-prod", "arbor-staging"]
    agent_path_template     = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceName }}"
    max_metadata_value_size = 256
  }
  node_attestor "azure_msi" {
    agent_path_template = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"
    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {
      resource_id     = "api://arbor-server"
      subscription_id = "11111111-1111-1111-1111-111111111111"
      app_id          = "22222222-2222-2222-2222-222222222222"
      app_secret      = "never-rendered"
    }
    tenant "33333333-3333-3333-3333-333333333333" {
      subscription_id = "44444444-4444-4444-4444-444444444444"
      app_id          = "66666666-6666-6666-6666-666666666666"
      app_secret      = "never-rendered"
    }
  }
}
`, nil, addSecret)
}
