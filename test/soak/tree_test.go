package soak

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/bench/benchproc"
	"github.com/arborid/arbor/topology"
)

const trustDomain = "soak.test"

var td = spiffeid.RequireTrustDomainFromString(trustDomain)

// The kinds of process the chaos loop kills; recovery times are reported
// per kind.
const (
	kindRoot     = "root server"
	kindRegional = "regional server"
	kindLeaf     = "leaf server"
	kindColo     = "co-located agent"
	kindWorkload = "workload agent"
)

var kinds = []string{kindRoot, kindRegional, kindLeaf, kindColo, kindWorkload}

// member is one process of the tree, started (and restarted after a kill)
// with the same arguments on the same state, as an operator's service
// manager would.
type member struct {
	name   string // e.g. "server leaf-a1", "agent of leaf-a1", "workload agent of leaf-a1"
	kind   string
	args   []string
	log    string
	health string           // host:port serving /ready
	srv    *topology.Server // the server block it is or sits beside
	admin  *admin.Client    // servers only

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	runs  int
	since time.Time // start of the current run
}

func (m *member) isServer() bool {
	return m.kind == kindRoot || m.kind == kindRegional || m.kind == kindLeaf
}

// start runs the process once more (its output appended to its log).
func (m *member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("%s is already running", m.name)
	}
	f, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	m.runs++
	fmt.Fprintf(f, "=== soak: run %d of %s at %s\n", m.runs, m.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(arborBin, m.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", m.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	m.cmd, m.done, m.since = cmd, done, time.Now()
	return nil
}

// kill sends SIGKILL and waits until the process is gone.
func (m *member) kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// stop sends SIGTERM and waits (SIGKILL after 10s).
func (m *member) stop() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// exited reports whether the current run has ended by itself.
func (m *member) exited() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// ready is nil once the process answers /ready with 200 (a server: an
// active X.509 CA; an agent: attested and synced) and a server's admin
// socket serves.
func (m *member) ready(ctx context.Context) error {
	if m.exited() {
		return fmt.Errorf("%s exited", m.name)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.health+"/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: /ready answered %s", m.name, resp.Status)
	}
	if m.exited() {
		// Whoever answered, it was not this process.
		return fmt.Errorf("%s exited", m.name)
	}
	if m.admin != nil {
		return m.admin.Serving(ctx)
	}
	return nil
}

// tree is the running tree: its topology, processes and the clients the
// checks use.
type tree struct {
	t        *testing.T
	dir      string
	topoPath string
	file     *topology.File
	servers  []*member // the topology's walk order: parents first
	colos    map[string]*member
	wagents  map[string]*member // workload agent per leaf
	leaves   []string
	rootCAs  []*x509.Certificate
}

// members is every process, servers first.
func (tr *tree) members() []*member {
	out := append([]*member(nil), tr.servers...)
	for _, s := range tr.servers {
		if m := tr.colos[s.srv.Name]; m != nil {
			out = append(out, m)
		}
	}
	for _, l := range tr.leaves {
		out = append(out, tr.wagents[l])
	}
	return out
}

func freeAddr(t testing.TB) string {
	t.Helper()
	p, err := benchproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// writeTopology writes the tree's topology file: root, region-a and
// region-b under it, two leaves under each; SQLite everywhere, join
// tokens, 40s X509-SVIDs (so workloads and the downstream SVIDs rotate
// during the run) and 1h agent SVIDs.
func writeTopology(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "trust_domain = %q\n\ndefaults {\n  x509_svid_ttl  = \"40s\"\n  agent_svid_ttl = \"1h\"\n  sync_interval  = \"1s\"\n}\n", trustDomain)
	block := func(name, parent, caTTL string) {
		fmt.Fprintf(&b, "\nserver %q {\n", name)
		if parent != "" {
			fmt.Fprintf(&b, "  parent = %q\n", parent)
		}
		fmt.Fprintf(&b, "  listen        = %q\n  health_listen = %q\n  ca_ttl        = %q\n  datastore \"sqlite\" {}\n  node_attestor \"join_token\" {}\n",
			freeAddr(t), freeAddr(t), caTTL)
		if parent != "" {
			b.WriteString("  agent {\n    node_attestor \"join_token\" {}\n  }\n")
		}
		b.WriteString("}\n")
	}
	block("root", "", "48h")
	for _, r := range []string{"a", "b"} {
		block("region-"+r, "root", "24h")
		for _, l := range []string{"1", "2"} {
			block("leaf-"+r+l, "region-"+r, "12h")
		}
	}
	path := filepath.Join(dir, "soak.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildTree writes the topology, lets `arbor up` bootstrap it (join tokens
// and downstream entries through the parents' admin sockets, every agent
// attested, a workload agent per leaf), stops arbor up, and then runs
// every process itself with the arguments arbor up gave it, resuming from
// the state arbor up left: arbor up treats a child that dies as fatal, and
// the chaos loop needs to kill and restart single processes.
func buildTree(t *testing.T, ctx context.Context) *tree {
	t.Helper()
	requireArbor(t)
	dir := testkit.ShortDir(t)
	tr := &tree{t: t, dir: dir, topoPath: writeTopology(t, dir), colos: map[string]*member{}, wagents: map[string]*member{}}
	f, diags := topology.ParseFile(tr.topoPath)
	if diags.HasErrors() {
		t.Fatalf("topology: %v", diags)
	}
	tr.file = f
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ms := tr.members()
		for i := len(ms) - 1; i >= 0; i-- {
			ms[i].stop()
		}
		for _, m := range ms {
			if m.admin != nil {
				m.admin.Close()
			}
		}
		if t.Failed() {
			for _, m := range ms {
				t.Logf("--- last lines of %s (%s) ---\n%s", m.name, m.log, tail(m.log, 25))
			}
		}
	})

	tr.bootstrap(ctx)

	for _, s := range f.Walk() {
		kind := kindRegional
		switch {
		case s.Parent == "":
			kind = kindRoot
		case len(f.Children(s.Name)) == 0:
			kind = kindLeaf
			tr.leaves = append(tr.leaves, s.Name)
		}
		ac, err := admin.Open(s.AdminSocket)
		if err != nil {
			t.Fatal(err)
		}
		tr.servers = append(tr.servers, &member{name: "server " + s.Name, kind: kind, srv: s, admin: ac, health: s.HealthListen,
			log: filepath.Join(logs, s.Name+".log"), args: []string{"server", "--topology", tr.topoPath, "--node", s.Name}})
		if s.Agent != nil {
			h := freeAddr(t)
			tr.colos[s.Name] = &member{name: "agent of " + s.Name, kind: kindColo, srv: s, health: h,
				log: filepath.Join(logs, s.Name+"-agent.log"),
				args: []string{"agent", "run", "--topology", tr.topoPath, "--node", s.Name,
					"--trust-bundle", filepath.Join(s.Agent.DataDir, "bootstrap.pem"), "--health-listen", h}}
		}
		if kind == kindLeaf {
			h := freeAddr(t)
			data, sock := workloadAgentPaths(s)
			tr.wagents[s.Name] = &member{name: "workload agent of " + s.Name, kind: kindWorkload, srv: s, health: h,
				log: filepath.Join(logs, s.Name+"-workload-agent.log"),
				args: []string{"agent", "run", "--topology", tr.topoPath, "--attach", s.Name, "--data-dir", data, "--socket-path", sock,
					"--trust-bundle", filepath.Join(data, "bootstrap.pem"), "--health-listen", h}}
		}
	}

	// Every process again, parents first, a downstream server's agent
	// before it, each ready before the next.
	began := time.Now()
	var order []*member
	for _, s := range tr.servers {
		if c := tr.colos[s.srv.Name]; c != nil {
			order = append(order, c)
		}
		order = append(order, s)
	}
	for _, l := range tr.leaves {
		order = append(order, tr.wagents[l])
	}
	for _, m := range order {
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		if err := testkit.PollErr(60*time.Second, m.name+" ready", func() error { return m.ready(ctx) }); err != nil {
			t.Fatalf("%v\n%s", err, tail(m.log, 30))
		}
	}
	t.Logf("tree: %d processes running on the state arbor up left, ready in %.1fs", len(tr.members()), time.Since(began).Seconds())

	b, err := tr.servers[0].admin.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			t.Fatal(err)
		}
		tr.rootCAs = append(tr.rootCAs, c)
	}
	return tr
}

// workloadAgentPaths are the data directory and Workload API socket arbor
// up gives a leaf's workload agent.
func workloadAgentPaths(s *topology.Server) (data, socket string) {
	dir := filepath.Join(s.StateDir, "demo")
	return filepath.Join(dir, "agent"), filepath.Join(dir, "workload.sock")
}

// bootstrap runs arbor up until every agent of the tree is attested, then
// stops it.
func (tr *tree) bootstrap(ctx context.Context) {
	t := tr.t
	t.Helper()
	out := filepath.Join(tr.dir, "logs", "arbor-up.out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(arborBin, "up", "--status-every", "1h", tr.topoPath)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	var dataDirs []string
	for _, s := range tr.file.Walk() {
		if s.Agent != nil {
			dataDirs = append(dataDirs, s.Agent.DataDir)
		}
		if len(tr.file.Children(s.Name)) == 0 {
			d, _ := workloadAgentPaths(s)
			dataDirs = append(dataDirs, d)
		}
	}
	began := time.Now()
	err = testkit.PollErr(90*time.Second, "arbor up attesting every agent", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("arbor up exited: %v", err)
		default:
		}
		for _, d := range dataDirs {
			if !agent.Attested(d) {
				return fmt.Errorf("agent %s not attested yet", d)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(out, 40))
	}
	t.Logf("arbor up: every agent attested %.1fs after start", time.Since(began).Seconds())
}

// countLines is how many lines of m's log contain s.
func (m *member) countLines(s string) (int, error) {
	data, err := os.ReadFile(m.log)
	if err != nil {
		return 0, err
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n, nil
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var errNotYet = errors.New("not yet")
