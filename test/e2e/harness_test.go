package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/testkit/freeport"
)

// Timeouts. Every wait in these tests is a poll bounded by one of them.
const (
	waitTimeout = 60 * time.Second       // a process becoming ready, an SVID arriving
	cliTimeout  = 30 * time.Second       // one spire-server CLI call
	stopTimeout = 30 * time.Second       // a process exiting after SIGTERM
	pollEvery   = 250 * time.Millisecond // between two attempts of a poll
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// poll calls try until it succeeds or timeout passes, then fails the test with
// the last error.
func poll(t testing.TB, timeout time.Duration, what string, try func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on (see
// freeport: below the ephemeral range, never twice).
func freePort(t testing.TB) int { return freeport.Must(t) }

// shortTempDir is a temporary directory with a short path, for Unix sockets
// (108-byte limit), removed at cleanup.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// process is a child process whose output goes to a log file.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

// startProcess starts bin with args, logging stdout and stderr to logPath.
// At cleanup a still running process is killed, and if the test failed the
// tail of its log is printed.
func startProcess(t testing.TB, name, logPath string, env []string, bin string, args ...string) *process {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	// Registered first so that it runs after the kill below (cleanups are LIFO).
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last lines of %s log (%s) ---\n%s", p.name, p.log, tail(p.log, 80))
		}
	})
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, cmd.Process.Pid)
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t testing.TB) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s exited before it was stopped: %v", p.name, p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s did not exit within %v of SIGTERM", p.name, stopTimeout)
	}
	if p.err != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want a clean exit", p.name, p.err)
	}
}

// logText returns the process's log so far.
func (p *process) logText(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// arborServer is an `arbor server` process and the topology it runs.
type arborServer struct {
	topology  string
	stateDir  string
	adminSock string
	port      int
	env       []string
	logDir    string
	runs      int
	proc      *process
	// spire is the SPIRE release whose CLI and agents talk to this server;
	// nil means defaultSpire().
	spire *spirePeer
}

// peer is the SPIRE release used with the server.
func (a *arborServer) peer() *spirePeer {
	if a.spire == nil {
		return defaultSpire()
	}
	return a.spire
}

// newArbor writes a one-server topology (join_token attestor, the given
// datastore block) into a temp dir. env is added to the server's environment
// (the topology may read it with env()). It does not start the server.
func newArbor(t testing.TB, datastore string, env ...string) *arborServer {
	t.Helper()
	dir := t.TempDir()
	a := &arborServer{
		topology:  filepath.Join(dir, "topology.hcl"),
		stateDir:  filepath.Join(dir, "state"),
		adminSock: filepath.Join(shortTempDir(t, "arb"), "admin.sock"),
		port:      freePort(t),
		env:       env,
		logDir:    dir,
	}
	hcl := fmt.Sprintf(`trust_domain = %q

server "root" {
  listen        = "127.0.0.1:%d"
  state_dir     = %q
  admin_socket  = %q
  health_listen = "off"
  log_level     = "debug"
  ca_ttl        = "24h"

  %s

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}
`, td.Name(), a.port, a.stateDir, a.adminSock, datastore)
	if err := os.WriteFile(a.topology, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	return a
}

// start runs the server and waits until its admin socket answers health
// checks and its agent port accepts connections.
func (a *arborServer) start(t testing.TB) {
	t.Helper()
	a.runs++
	logPath := filepath.Join(a.logDir, fmt.Sprintf("arbor-%d.log", a.runs))
	a.proc = startProcess(t, fmt.Sprintf("arbor server (run %d)", a.runs), logPath, a.env,
		arborBin, "server", "--topology", a.topology, "--node", "root")

	conn, err := grpc.NewClient("unix://"+a.adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	poll(t, waitTimeout, "arbor server becoming ready", func() error {
		if a.proc.exited() {
			t.Fatalf("arbor server exited during start: %v\n%s", a.proc.err, tail(a.proc.log, 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %v", resp.GetStatus())
		}
		c, err := net.DialTimeout("tcp", a.addr(), 2*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (a *arborServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port)) }

// cliResult is what a spire-server CLI call printed.
type cliResult struct {
	stdout, stderr string
	err            error
}

// cliRun runs `spire-server <cmd...> -socketPath <admin socket> <flags...>`:
// args are the subcommand words followed by flags, and the socket flag is
// inserted before the first flag.
func (a *arborServer) cliRun(t testing.TB, args ...string) cliResult {
	t.Helper()
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full := append(append(append([]string{}, args[:i]...), "-socketPath", a.adminSock), args[i:]...)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, a.peer().server, full...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// cli is cliRun that fails the test when the command fails.
func (a *arborServer) cli(t testing.TB, args ...string) string {
	t.Helper()
	r := a.cliRun(t, args...)
	if r.err != nil {
		t.Fatalf("spire-server %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// cliJSON runs a CLI command with -output json and decodes its output as msg.
func (a *arborServer) cliJSON(t *testing.T, msg proto.Message, args ...string) {
	t.Helper()
	out := a.cli(t, append(args, "-output", "json")...)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), msg); err != nil {
		t.Fatalf("spire-server %s printed %q, not a %T: %v", strings.Join(args, " "), out, msg, err)
	}
}

// generateToken creates a join token whose node alias is aliasID.
func (a *arborServer) generateToken(t *testing.T, aliasID spiffeid.ID) string {
	t.Helper()
	out := a.cli(t, "token", "generate", "-spiffeID", aliasID.String())
	token, ok := strings.CutPrefix(strings.TrimSpace(out), "Token: ")
	if !ok || token == "" {
		t.Fatalf("spire-server token generate printed %q, want \"Token: <token>\"", out)
	}
	return token
}

// createEntry registers id under parent with one selector and returns its ID.
func (a *arborServer) createEntry(t *testing.T, parent, id spiffeid.ID, selector string) string {
	t.Helper()
	var resp entryv1.BatchCreateEntryResponse
	a.cliJSON(t, &resp, "entry", "create", "-parentID", parent.String(), "-spiffeID", id.String(), "-selector", selector)
	if len(resp.Results) != 1 || resp.Results[0].GetStatus().GetCode() != 0 || resp.Results[0].GetEntry().GetId() == "" {
		t.Fatalf("entry create %s returned %v, want one created entry", id, &resp)
	}
	return resp.Results[0].GetEntry().GetId()
}

// bundlePEM returns the X.509 authorities of `bundle show` (PEM) and the raw output.
func (a *arborServer) bundlePEM(t testing.TB) ([]*x509.Certificate, []byte) {
	t.Helper()
	out := []byte(a.cli(t, "bundle", "show"))
	var certs []*x509.Certificate
	rest := out
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("bundle show printed a %q PEM block, want CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("bundle show printed an unparsable certificate: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("bundle show printed no certificates:\n%s", out)
	}
	return certs, out
}

// spireAgent is a spire-agent process attested to an arbor server.
type spireAgent struct {
	socket  string
	dataDir string
	proc    *process
}

// startAgent writes the agent's bootstrap bundle (from `bundle show`) and
// config, and starts spire-agent (of the server's SPIRE release) with the
// join token. It returns once the Workload API socket exists.
func startAgent(t *testing.T, a *arborServer, token string) *spireAgent {
	t.Helper()
	_, pemOut := a.bundlePEM(t)
	return startSpireAgentOf(t, a.peer(), td.Name(), a.port, pemOut, token)
}

// startSpireAgentOf starts spire-agent of release p in trustDomain, attested
// with token to the server on 127.0.0.1:port whose bundle is bundlePEM, with
// the unix workload attestor. It returns once the Workload API socket exists.
func startSpireAgentOf(t *testing.T, p *spirePeer, trustDomain string, port int, bundlePEM []byte, token string) *spireAgent {
	t.Helper()
	return startSpireAgentWith(t, p, trustDomain, port, bundlePEM, nil, fmt.Sprintf("join_token        = %q", token), `NodeAttestor "join_token" {
    plugin_data {}
  }`)
}

// startSpireAgentWith is startSpireAgentOf with env added to the agent's
// environment, agentExtra in the agent block and nodeAttestor as the
// NodeAttestor plugin block.
func startSpireAgentWith(t *testing.T, p *spirePeer, trustDomain string, port int, bundlePEM []byte, env []string, agentExtra, nodeAttestor string) *spireAgent {
	t.Helper()
	ag := launchSpireAgent(t, p, trustDomain, port, bundlePEM, env, agentExtra, nodeAttestor)
	poll(t, waitTimeout, "spire-agent serving the Workload API", func() error {
		if ag.proc.exited() {
			t.Fatalf("spire-agent exited during start: %v\n%s", ag.proc.err, tail(ag.proc.log, 40))
		}
		c, err := net.DialTimeout("unix", ag.socket, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return ag
}

// launchSpireAgent starts spire-agent as startSpireAgentWith does, without
// waiting for it to serve (an agent expected to be refused).
func launchSpireAgent(t *testing.T, p *spirePeer, trustDomain string, port int, bundlePEM []byte, env []string, agentExtra, nodeAttestor string) *spireAgent {
	t.Helper()
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ag := &spireAgent{
		socket:  filepath.Join(shortTempDir(t, "sa"), "agent.sock"),
		dataDir: filepath.Join(dir, "data"),
	}
	// The sync interval stays SPIRE's default (5s).
	conf := fmt.Sprintf(`agent {
  data_dir          = %q
  log_level         = "DEBUG"
  server_address    = "127.0.0.1"
  server_port       = "%d"
  socket_path       = %q
  trust_bundle_path = %q
  trust_domain      = %q
  %s
}

plugins {
  %s
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, ag.dataDir, port, ag.socket, bundlePath, trustDomain, agentExtra, nodeAttestor)
	confPath := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ag.proc = startProcess(t, "spire-agent "+p.version, filepath.Join(dir, "spire-agent.log"), env,
		p.agent, "run", "-config", confPath)
	return ag
}

// countLines returns how many lines of the agent's log contain s.
func (ag *spireAgent) countLines(t *testing.T, s string) int {
	t.Helper()
	n := 0
	sc := bufio.NewScanner(strings.NewReader(ag.proc.logText(t)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// storedSVIDLen returns the length of the agent SVID chain spire-agent keeps
// in <data_dir>/agent-data.json (its storage format since v1.9).
func (ag *spireAgent) storedSVIDLen(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ag.dataDir, "agent-data.json"))
	if err != nil {
		t.Fatalf("reading spire-agent data: %v", err)
	}
	var data struct {
		SVID [][]byte `json:"svid"`
	}
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatalf("decoding %s/agent-data.json: %v", ag.dataDir, err)
	}
	return len(data.SVID)
}

func (ag *spireAgent) addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + ag.socket)
}

// waitX509SVID polls the agent's Workload API until it returns an X509-SVID
// for id.
func (ag *spireAgent) waitX509SVID(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	var got *x509svid.SVID
	poll(t, waitTimeout, "workload receiving X509-SVID "+id.String(), func() error {
		if ag.proc.exited() {
			t.Fatalf("waiting for X509-SVID %s: spire-agent exited: %v", id, ag.proc.err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svids, err := workloadapi.FetchX509SVIDs(ctx, ag.addr())
		if err != nil {
			return err
		}
		var ids []string
		for _, s := range svids {
			if s.ID == id {
				got = s
				return nil
			}
			ids = append(ids, s.ID.String())
		}
		return fmt.Errorf("workload got SVIDs %v, not %s", ids, id)
	})
	return got
}

// mustID parses a SPIFFE ID in example.org.
func mustID(t *testing.T, path string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromPath(td, path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
