package svidcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// realAgent is an in-process arbor server and an agent attested to it whose
// Workload API gives this test process the entries registered with entry.
type realAgent struct {
	t       *testing.T
	srv     *testkit.Server
	agentID spiffeid.ID
	cfg     agent.Config
	addr    string
	stop    func()
}

// everyone is a workload attestor that gives every caller the selector
// test:watch.
type everyone struct{}

func (everyone) Attest(context.Context, int32) ([]selector.Selector, error) {
	return []selector.Selector{{Type: "test", Value: "watch"}}, nil
}

func startRealAgent(t *testing.T) *realAgent {
	t.Helper()
	dir := testkit.ShortDir(t)
	srv := testkit.StartServer(t, server.Config{
		Name: "test", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true,
	})
	ctx := testkit.Context(t, 30*time.Second)
	jt, err := agentv1.NewAgentClient(srv.Admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	a := &realAgent{t: t, srv: srv, agentID: spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+jt.Value)}
	a.cfg = agent.Config{
		TrustDomain: td, ServerAddress: srv.AgentAddr().String(), InsecureBootstrap: true,
		DataDir: filepath.Join(dir, "agent"), SocketPath: filepath.Join(dir, "api.sock"),
		JoinToken: jt.Value, SyncInterval: 200 * time.Millisecond,
		WorkloadAttestors: []agent.WorkloadAttestor{everyone{}},
	}
	a.addr = "unix://" + a.cfg.SocketPath
	a.start()
	t.Cleanup(func() { a.stop() })
	return a
}

// start runs the agent until stop, waiting until it is ready.
func (a *realAgent) start() {
	t := a.t
	t.Helper()
	ag, err := agent.New(a.cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	stopped := false
	a.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s")
		}
	}
	select {
	case <-ag.Ready():
	case err := <-done:
		t.Fatalf("agent stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready within 30s")
	}
}

// entry registers id for this process with the given X509-SVID TTL
// (seconds; 0: the default).
func (a *realAgent) entry(id spiffeid.ID, ttl int32, dns ...string) {
	a.t.Helper()
	resp, err := entryv1.NewEntryClient(a.srv.Admin).BatchCreateEntry(testkit.Context(a.t, 30*time.Second), &entryv1.BatchCreateEntryRequest{
		Entries: []*types.Entry{{
			ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: a.agentID.Path()},
			SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
			Selectors: []*types.Selector{{Type: "test", Value: "watch"}}, X509SvidTtl: ttl, DnsNames: dns,
		}},
	})
	if err != nil {
		a.t.Fatalf("BatchCreateEntry: %v", err)
	}
	if st := resp.Results[0].Status; st.Code != 0 {
		a.t.Fatalf("BatchCreateEntry: %v", st)
	}
}

// runWatch runs Watch with cfg (its health endpoint on a fresh port) until
// the test ends, and returns the health endpoint's base URL.
func runWatch(t *testing.T, cfg WatchConfig) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HealthListener = lis
	if cfg.RetryBase == 0 {
		cfg.RetryBase, cfg.RetryMax = 50*time.Millisecond, 400*time.Millisecond
	}
	if os.Getenv("WATCH_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch = %v, want nil after cancel", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Watch did not return within 30s of its context's end")
		}
	})
	return "http://" + lis.Addr().String()
}

// health returns the status code and body of GET base+path.
func health(base, path string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

func waitReady(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	testkit.Poll(t, timeout, "/ready", func() error {
		code, body, err := health(base, "/ready")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/ready = %d %s", code, body)
		}
		return nil
	})
}

// waitNotReady waits until /ready answers 503 with a body containing every
// one of want, and returns the body.
func waitNotReady(t *testing.T, base string, timeout time.Duration, want ...string) string {
	t.Helper()
	var last string
	testkit.Poll(t, timeout, "/ready failing with "+strings.Join(want, ", "), func() error {
		code, body, err := health(base, "/ready")
		if err != nil {
			return err
		}
		last = body
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("/ready = %d %s", code, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return fmt.Errorf("/ready body %q lacks %q", body, w)
			}
		}
		return nil
	})
	return last
}

// readLeaf parses the first certificate of a PEM file.
func readLeaf(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// hupCounter is a child shell that appends a line to a file for every
// SIGHUP, with a pid file.
func hupCounter(t *testing.T, dir string) (pidFile, countFile string) {
	t.Helper()
	countFile = filepath.Join(dir, "hups")
	// A shell started with SIGHUP ignored cannot trap it (POSIX), and a
	// child inherits an ignored signal: under nohup the trap below would
	// silently never run. Handling SIGHUP here makes the child start with
	// the default disposition (exec resets handled signals).
	if signal.Ignored(syscall.SIGHUP) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
	cmd := exec.Command("/bin/sh", "-c", `trap 'echo hup >> "$0"' HUP; while :; do sleep 0.05; done`, countFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pidFile = filepath.Join(dir, "child.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Give the shell time to install its trap before the first signal:
	// poll /proc until it runs its loop (a sleep child exists).
	testkit.Poll(t, 10*time.Second, "trap installed", func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return fmt.Errorf("no child yet")
		}
		return nil
	})
	return pidFile, countFile
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// Two SVIDs of one process kept by one Watch against a real agent: the
// short-lived one rotates at least three times, every rotation replaces
// chain, key and bundle (the pair always matches, modes 0644/0600) and runs
// the reload command with the SVID's ID; the other target's combined file,
// JWT-SVID and SIGHUP through a pid file work too.
func TestWatchRealAgentRotation(t *testing.T) {
	a := startRealAgent(t)
	web, db := spiffeid.RequireFromPath(td, "/web"), spiffeid.RequireFromPath(td, "/db")
	a.entry(web, 4)
	a.entry(db, 0)
	dir := t.TempDir()
	reloads := filepath.Join(dir, "reloads")
	pidFile, hups := hupCounter(t, dir)
	cfg := WatchConfig{Addr: a.addr, Targets: []Target{
		{Name: "web", ID: web, CertFile: filepath.Join(dir, "web.pem"), KeyFile: filepath.Join(dir, "web.key"),
			BundleFile: filepath.Join(dir, "bundle.pem"), ReloadCommand: `echo "$ARBOR_SVID_NAME $ARBOR_SPIFFE_ID" >> ` + reloads},
		{Name: "db", ID: db, CombinedFile: filepath.Join(dir, "db.pem"), JWTAudiences: []string{"spiffe://example.org/billing", "extra"},
			JWTFile: filepath.Join(dir, "db.jwt"), ReloadSignal: 1, PIDFile: pidFile},
	}}
	base := runWatch(t, cfg)
	waitReady(t, base, 30*time.Second)
	if code, body, err := health(base, "/live"); err != nil || code != http.StatusOK {
		t.Errorf("/live = %d %q, %v; want 200", code, body, err)
	}

	serials := map[string]bool{}
	testkit.Poll(t, 60*time.Second, "four distinct web SVIDs (three rotations)", func() error {
		pair, err := tls.LoadX509KeyPair(cfg.Targets[0].CertFile, cfg.Targets[0].KeyFile)
		if err != nil {
			return err // a rotation between the two reads; the next poll sees a pair
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return err
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() {
			t.Fatalf("web.pem holds %v, want %s", leaf.URIs, web)
		}
		serials[leaf.SerialNumber.String()] = true
		if len(serials) < 4 {
			return fmt.Errorf("%d distinct serials so far", len(serials))
		}
		return nil
	})
	if got := countLines(reloads); got < 4 {
		t.Errorf("reload command ran %d times for 4 SVIDs, want at least 4", got)
	}
	if b, _ := os.ReadFile(reloads); !strings.HasPrefix(string(b), "web "+web.String()+"\n") {
		t.Errorf("reload command saw %q, want lines of \"web %s\"", b, web)
	}
	if m := fileMode(t, cfg.Targets[0].KeyFile); m != 0o600 {
		t.Errorf("key mode = %v, want 0600", m)
	}
	if m := fileMode(t, cfg.Targets[0].CertFile); m != 0o644 {
		t.Errorf("cert mode = %v, want 0644", m)
	}
	bundle, err := readLeaf(cfg.Targets[0].BundleFile)
	if err != nil || !bundle.IsCA {
		t.Errorf("bundle.pem = %v, %v; want the trust domain's CA", bundle, err)
	}
	if leaf, err := readLeaf(cfg.Targets[0].CertFile); err == nil {
		if err := leaf.CheckSignatureFrom(bundle); err != nil {
			t.Errorf("web SVID does not chain to bundle.pem: %v", err)
		}
	}

	// db: one combined file (chain then key), mode 0600.
	combined, err := os.ReadFile(cfg.Targets[1].CombinedFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(combined, combined); err != nil {
		t.Errorf("db.pem is not a certificate and its key: %v", err)
	}
	if m := fileMode(t, cfg.Targets[1].CombinedFile); m != 0o600 {
		t.Errorf("combined file mode = %v, want 0600", m)
	}
	tok, err := os.ReadFile(cfg.Targets[1].JWTFile)
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := jwtsvid.ParseInsecure(strings.TrimSpace(string(tok)), []string{"extra"})
	if err != nil || jwt.ID != db || !strings.Contains(fmt.Sprint(jwt.Audience), "spiffe://example.org/billing") {
		t.Errorf("db.jwt = %v, %v; want a JWT-SVID of %s for both audiences", jwt, err, db)
	}
	if m := fileMode(t, cfg.Targets[1].JWTFile); m != 0o600 {
		t.Errorf("jwt mode = %v, want 0600", m)
	}
	testkit.Poll(t, 10*time.Second, "SIGHUP to the pid file's process", func() error {
		if countLines(hups) < 1 {
			return fmt.Errorf("no SIGHUP received")
		}
		return nil
	})
	waitReady(t, base, 10*time.Second)
}

// When the agent goes away the files keep their last SVID, /ready says the
// Workload API cannot be reached, and when it comes back the watch
// reconnects by itself and rotates again.
func TestWatchAgentRestart(t *testing.T) {
	a := startRealAgent(t)
	web := spiffeid.RequireFromPath(td, "/web")
	a.entry(web, 4)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key")
	base := runWatch(t, WatchConfig{Addr: a.addr, Targets: []Target{{Name: "web", CertFile: cert, KeyFile: key}}})
	waitReady(t, base, 30*time.Second)

	a.stop()
	waitNotReady(t, base, 30*time.Second, "Workload API", "cannot reach the Workload API")
	before, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Errorf("with the agent gone, the files are no pair: %v", err)
	}
	if code, _, err := health(base, "/live"); err != nil || code != http.StatusOK {
		t.Errorf("/live = %d, %v with the agent gone; want 200", code, err)
	}

	a.start()
	testkit.Poll(t, 60*time.Second, "a new SVID after the agent's restart", func() error {
		now, err := os.ReadFile(cert)
		if err != nil {
			return err
		}
		if bytes.Equal(now, before) {
			return fmt.Errorf("svid.pem unchanged")
		}
		return nil
	})
	waitReady(t, base, 30*time.Second)
}

// A target whose key directory does not exist keeps its old certificate
// (nothing of it is replaced), a reload command that fails is retried with
// backoff, both show in /ready while a healthy target is written; once the
// directory exists and the command succeeds, every target is ready.
func TestWatchBadTargetAndFailingReload(t *testing.T) {
	a := startRealAgent(t)
	web := spiffeid.RequireFromPath(td, "/web")
	a.entry(web, 0)
	dir := t.TempDir()
	oldCert := filepath.Join(dir, "old.pem")
	if err := os.WriteFile(oldCert, []byte("OLD\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	attempts, gate := filepath.Join(dir, "attempts"), filepath.Join(dir, "gate")
	// Fails (exit 3, "boom" on stderr) until the gate file exists.
	flaky := fmt.Sprintf(`echo x >> %s; [ -e %s ] || { echo boom >&2; exit 3; }`, attempts, gate)
	okCert := filepath.Join(dir, "ok.pem")
	cfg := WatchConfig{Addr: a.addr, RetryBase: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond, Targets: []Target{
		{Name: "nodir", CertFile: oldCert, KeyFile: filepath.Join(missing, "svid.key")},
		{Name: "ok", CertFile: okCert, KeyFile: filepath.Join(dir, "ok.key")},
		{Name: "flaky", CertFile: filepath.Join(dir, "flaky.pem"), KeyFile: filepath.Join(dir, "flaky.key"), ReloadCommand: flaky},
	}}
	base := runWatch(t, cfg)
	body := waitNotReady(t, base, 30*time.Second,
		`svid "nodir": write `+filepath.Join(missing, "svid.key")+": directory "+missing+" does not exist",
		`svid "flaky": reload command "`+flaky+`" failed: exit status 3: boom`)
	if strings.Contains(body, `svid "ok"`) {
		t.Errorf("/ready blames the healthy target: %s", body)
	}
	if b, _ := os.ReadFile(oldCert); string(b) != "OLD\n" {
		t.Errorf("old.pem = %q after a failed write of its target, want it intact", b)
	}
	if _, err := tls.LoadX509KeyPair(okCert, filepath.Join(dir, "ok.key")); err != nil {
		t.Errorf("the healthy target was not written: %v", err)
	}
	testkit.Poll(t, 30*time.Second, "the failed reload retried", func() error {
		if n := countLines(attempts); n < 3 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})

	if err := os.Mkdir(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitReady(t, base, 30*time.Second)
	n := countLines(attempts)
	time.Sleep(time.Second) // a ready target must not reload again without a change
	if got := countLines(attempts); got != n {
		t.Errorf("the reload command ran %d more times after it succeeded, want none without a rotation", got-n)
	}
	if _, err := tls.LoadX509KeyPair(oldCert, filepath.Join(missing, "svid.key")); err != nil {
		t.Errorf("after the directory appeared: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
