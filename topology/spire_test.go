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
// memory keys, a JWT key type of its own and a join token in the file.
var spireFiles = []string{"vault-root.hcl", "spire-upstream-root.hcl", "bundle-endpoint.hcl", "federation-fetched-by.hcl"}

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
		{server, "server.socket_path", `"../examples/.arbor/aws-us-east-1a/admin.sock"`},
		{server, "plugins.UpstreamAuthority[spire].plugin_data.server_address", `"arbor.us-east-1.aws.example.org"`},
		{server, "plugins.UpstreamAuthority[spire].plugin_data.server_port", `"8081"`},
		{server, "plugins.UpstreamAuthority[spire].plugin_data.workload_api_socket", `"../examples/.arbor/aws-us-east-1a/agent.sock"`},
		{server, "plugins.DataStore[sql].plugin_data.database_type", `"sqlite3"`},
		{agent, "agent.server_address", `"arbor.us-east-1.aws.example.org"`},
		{agent, "agent.server_port", "8081"},
		{agent, "agent.socket_path", `"../examples/.arbor/aws-us-east-1a/agent.sock"`},
		{agent, "plugins.NodeAttestor[x509pop].plugin_data.certificate_path", `"/etc/arbor/machine.pem"`},
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
						checked[conf.side+" "+p.Type+" "+p.Labels[0]+" "+key] = true
						if !known[key[strings.LastIndex(key, ".")+1:]] {
							t.Errorf("%s %s.conf: %s %q plugin_data key %q is not documented in %s", c.name, conf.side, p.Type, p.Labels[0], key, doc)
						}
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

// pluginDataKeys lists the attributes of a plugin's plugin_data block,
// nested blocks as BLOCK then BLOCK.ATTR.
func pluginDataKeys(plugin *hclsyntax.Body) []string {
	var out []string
	var walk func(b *hclsyntax.Body, prefix string)
	walk = func(b *hclsyntax.Body, prefix string) {
		for name := range b.Attributes {
			out = append(out, prefix+name)
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
	dir, err := os.MkdirTemp("", "arbor") // short: the admin socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	// x509pop needs a CA bundle file to load.
	ca := testCACertPEM(t)
	if err := os.WriteFile(filepath.Join(dir, "agent-ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	src := `trust_domain = "example.org"
server "root" {
  listen        = "` + addr + `"
  health_listen = ""
  ca_ttl        = "48h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  node_attestor "x509pop" { ca_bundle_paths = ["agent-ca.pem"] }
}
`
	path := filepath.Join(dir, "t.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := ParseFile(path)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	server, _ := renderSPIREFiles(t, spireCase{file: f, node: "root"})
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, server, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.Servers[0].StateDir, 0o700); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs bytes.Buffer
	run := exec.CommandContext(ctx, filepath.Join(spireBin(t), "spire-server"), "run", "-config", conf)
	run.Stdout, run.Stderr = &logs, &logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	defer func() {
		run.Process.Kill()
		<-exited
	}()

	socket := f.Servers[0].AdminSocket
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.CommandContext(ctx, filepath.Join(spireBin(t), "spire-server"), "healthcheck", "-socketPath", socket).CombinedOutput()
		if err == nil && strings.Contains(string(out), "Server is healthy") {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("spire-server exited with the rendered server.conf: %v\n%s\n%s", err, logs.String(), server)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-server not healthy within a minute on %s: %s\n%s", socket, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not a timing assumption
	}
	// The rendered datastore and key manager paths are the ones in use.
	for _, p := range []string{f.Servers[0].Datastore.Path, filepath.Join(f.Servers[0].StateDir, "keys.json")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("spire-server did not create %s: %v", p, err)
		}
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
