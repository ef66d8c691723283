package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// These tests run each kind of arbor process twice on the same state: the
// second is refused at once, in one line naming the first one's PID, and the
// first keeps serving; after the first is killed with SIGKILL (no cleanup at
// all), a restart on the same state works.

// refusedRun runs arbor with args, which must exit non-zero within 30s, and
// returns what it printed.
func refusedRun(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, arborBin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("arbor %s still running after 30s, want it refused at once; output:\n%s", strings.Join(args, " "), out)
	}
	if err == nil {
		t.Fatalf("arbor %s exited 0, want a refusal; output:\n%s", strings.Join(args, " "), out)
	}
	t.Logf("arbor %s refused in %v", args[0], time.Since(start).Round(time.Millisecond))
	return string(out)
}

// wantOutput requires out to be exactly the line want.
func wantOutput(t *testing.T, what, out, want string) {
	t.Helper()
	if out != want+"\n" {
		t.Errorf("%s printed\n%s\nwant the one line\n%s", what, out, want)
	}
}

// sameSocket requires path to be still the socket file before was.
func sameSocket(t *testing.T, path string, before os.FileInfo) {
	t.Helper()
	now, err := os.Lstat(path)
	if err != nil || !os.SameFile(before, now) {
		t.Fatalf("socket %s was removed or replaced (%v)", path, err)
	}
}

// killed SIGKILLs p and waits for it, leaving whatever it had on disk.
func killed(t *testing.T, p *process) {
	t.Helper()
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s did not exit after SIGKILL", p.name)
	}
}

// adminServing checks the gRPC health service on an admin socket.
func adminServing(t *testing.T, sock string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("admin socket %s: health %v (%v), want SERVING", sock, resp.GetStatus(), err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	requireSetup(t)
	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	sock, err := os.Lstat(a.adminSock)
	if err != nil {
		t.Fatal(err)
	}
	_, bundle := a.bundlePEM(t)

	out := refusedRun(t, "server", "--topology", a.topology, "--node", "root")
	wantOutput(t, "the second arbor server", out, fmt.Sprintf(
		"arbor: state directory %s is in use by pid %d (server root; lock %s); stop it first",
		a.stateDir, a.proc.cmd.Process.Pid, filepath.Join(a.stateDir, "arbor.lock")))
	if a.proc.exited() {
		t.Fatalf("the first server exited: %v", a.proc.err)
	}
	sameSocket(t, a.adminSock, sock)
	adminServing(t, a.adminSock)
	if _, again := a.bundlePEM(t); !bytes.Equal(again, bundle) {
		t.Error("the first server's bundle changed when the second one was refused")
	}

	// Killed, the server leaves its admin socket behind but not its lock:
	// the restart replaces the stale socket and serves the same CA.
	killed(t, a.proc)
	if fi, err := os.Lstat(a.adminSock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale admin socket after SIGKILL (%v); the test needs one", err)
	}
	a.start(t)
	if _, again := a.bundlePEM(t); !bytes.Equal(again, bundle) {
		t.Error("the restarted server holds another bundle")
	}
}

// agentRun starts `arbor agent run` against a with the given data
// directory, socket and extra flags, and waits until it serves an SVID.
func agentRun(t *testing.T, a *arborServer, name, dataDir, socket string, flags ...string) *process {
	t.Helper()
	args := append([]string{"agent", "run", "--server-address", a.addr(), "--trust-domain", td.Name(),
		"--data-dir", dataDir, "--socket-path", socket, "--sync-interval", "1s", "--log-level", "debug"}, flags...)
	p := startProcess(t, name, filepath.Join(t.TempDir(), "agent.log"), nil, arborBin, args...)
	poll(t, waitTimeout, name+" serving an X509-SVID", func() error {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", name, p.err, tail(p.log, 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
		return err
	})
	return p
}

func TestSecondAgentRunRefused(t *testing.T) {
	requireSetup(t)
	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	_, bundlePEM := a.bundlePEM(t)
	dir := shortTempDir(t, "ag")
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	token := a.generateToken(t, spiffeid.RequireFromPath(td, "/first-node"))
	agentID := spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+token)
	a.createEntry(t, agentID, spiffeid.RequireFromPath(td, "/served"), "unix:uid:"+strconv.Itoa(os.Getuid()))
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir, socket := filepath.Join(dir, "data"), filepath.Join(dir, "api.sock")
	first := agentRun(t, a, "first agent", dataDir, socket, "--trust-bundle", bundlePath, "--join-token-file", tokenFile)
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("the spent join token file is still there (%v)", err)
	}
	sock, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	agents := a.cli(t, "agent", "count")

	// The same data directory (and its own socket).
	out := refusedRun(t, "agent", "run", "--server-address", a.addr(), "--trust-domain", td.Name(),
		"--data-dir", dataDir, "--socket-path", filepath.Join(dir, "other.sock"))
	wantOutput(t, "an agent on the same data directory", out, fmt.Sprintf(
		"arbor: data directory %s is in use by pid %d (agent; lock %s); stop it first",
		dataDir, first.cmd.Process.Pid, filepath.Join(dataDir, "arbor.lock")))

	// Its own data directory and a fresh token, but the same socket (as two
	// agents on the default socket): refused before it attests.
	second := filepath.Join(dir, "token2")
	if err := os.WriteFile(second, []byte(a.generateToken(t, spiffeid.RequireFromPath(td, "/second-node"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = refusedRun(t, "agent", "run", "--server-address", a.addr(), "--trust-domain", td.Name(), "--trust-bundle", bundlePath,
		"--join-token-file", second, "--data-dir", filepath.Join(dir, "data2"), "--socket-path", socket)
	wantOutput(t, "an agent on the same socket", out, fmt.Sprintf(
		"arbor: agent: workload API: socket %s is served by another process (pid %d); stop it first", socket, first.cmd.Process.Pid))
	if got := a.cli(t, "agent", "count"); got != agents {
		t.Errorf("agent count %q after the refusals, was %q: a refused agent attested", strings.TrimSpace(got), strings.TrimSpace(agents))
	}
	if _, err := os.Stat(second); err != nil {
		t.Errorf("the refused agent's join token file is gone (%v), want it unspent", err)
	}

	if first.exited() {
		t.Fatalf("the first agent exited: %v", first.err)
	}
	sameSocket(t, socket, sock)
	if out, err := exec.Command(arborBin, "agent", "healthcheck", "--socket-path", socket).CombinedOutput(); err != nil {
		t.Errorf("the first agent's healthcheck: %v\n%s", err, out)
	}

	// Killed, it leaves a stale socket and its lock file; a restart on the
	// same data directory resumes with its stored SVID and replaces the
	// socket.
	killed(t, first)
	if fi, err := os.Lstat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket after SIGKILL (%v); the test needs one", err)
	}
	agentRun(t, a, "restarted agent", dataDir, socket)
	if got := a.cli(t, "agent", "count"); got != agents {
		t.Errorf("agent count %q after the restart, was %q: the agent attested again", strings.TrimSpace(got), strings.TrimSpace(agents))
	}
}

// joinTokenIDs are the tokens in join_token agent IDs of an `agent list`.
var joinTokenIDs = regexp.MustCompile(`/spire/agent/join_token/([0-9a-fA-F-]{16,})`)

// procArgs is the argv of pid (nil when it is gone).
func procArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// TestUpTwiceRefused runs arbor up on a four-server tree: no process holds a
// join token in its command line or environment, and every token file is
// gone once spent; a second arbor up of the file is refused at once naming
// the first, whose tree keeps running (same children, sockets and
// demos); killed with SIGKILL, the first leaves its lock to nobody and a
// restart of the file comes up.
func TestUpTwiceRefused(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "twi")
	topo := childTree(t, dir)
	up, r := startUpOnPipe(t, topo)
	readUntil(t, r, "ready;", 3*time.Minute)
	var upOut syncBuffer
	go io.Copy(&upOut, r)
	kids := childrenOf(t, up.cmd.Process.Pid)
	if len(kids) != 11 {
		t.Errorf("arbor up runs %d children, want 11", len(kids))
	}
	killLeftovers(t, kids)

	// The real tokens: every join_token agent of the tree, from the servers
	// it attested to (the root: regional's agent; regional: the leaves';
	// each leaf: its workload agent).
	var tokens []string
	for _, s := range []string{"root", "regional", "leaf-a", "leaf-b"} {
		srv := &arborServer{adminSock: filepath.Join(dir, s, "admin.sock")}
		for _, m := range joinTokenIDs.FindAllStringSubmatch(srv.cli(t, "agent", "list"), -1) {
			tokens = append(tokens, m[1])
		}
	}
	if len(tokens) != 5 {
		t.Fatalf("found %d join_token agents in the tree, want 5 (3 co-located, 2 workload agents): %v", len(tokens), tokens)
	}
	for _, k := range kids {
		args := procArgs(k.pid)
		for i, a := range args {
			if a == "--join-token" {
				t.Errorf("child %d passes --join-token %q on its command line: %s", k.pid, args[min(i+1, len(args)-1)], k.name)
			}
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", k.pid))
		for _, tok := range tokens {
			if bytes.Contains(env, []byte(tok)) {
				t.Errorf("child %d has join token %s in its environment: %s", k.pid, tok, k.name)
			}
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		line := strings.Join(procArgs(pid), " ")
		for _, tok := range tokens {
			if strings.Contains(line, tok) {
				t.Errorf("process %d holds join token %s in its command line: %s", pid, tok, line)
			}
		}
	}
	for _, p := range []string{"regional/agent", "leaf-a/agent", "leaf-b/agent", "leaf-a/demo/agent", "leaf-b/demo/agent"} {
		if _, err := os.Stat(filepath.Join(dir, p, "join-token")); !os.IsNotExist(err) {
			t.Errorf("%s/join-token is still there after the agent attested (%v)", p, err)
		}
	}

	// The second arbor up of the same file.
	sockets := map[string]os.FileInfo{}
	for _, p := range []string{"root/up.sock", "root/admin.sock", "leaf-a/admin.sock", "leaf-a/agent.sock", "leaf-a/demo/workload.sock", "leaf-b/demo/workload.sock"} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		sockets[p] = fi
	}
	// It says so, shows the running tree, and ends with the refusal naming
	// the first one.
	out := refusedRun(t, "up", topo)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if want := fmt.Sprintf("arbor: topology %s is in use by pid %d (arbor up %s; lock %s); stop it first",
		topo, up.cmd.Process.Pid, topo, filepath.Join(dir, "root", "up.lock")); lines[len(lines)-1] != want {
		t.Errorf("the second arbor up's last line is\n%s\nwant\n%s\n(all:\n%s)", lines[len(lines)-1], want, out)
	}
	for _, want := range []string{topo + " is already running; its tree (arbor status " + topo + "):",
		fmt.Sprintf("arbor up pid %d, ready", up.cmd.Process.Pid), "leaf-a"} {
		if !strings.Contains(out, want) {
			t.Errorf("the second arbor up does not show the running tree (%q):\n%s", want, out)
		}
	}
	if up.done() {
		t.Fatalf("the first arbor up exited (%v)", up.err)
	}
	if left := alive(kids); len(left) != len(kids) {
		t.Errorf("%d of %d children of the first arbor up stopped", len(kids)-len(left), len(kids))
	}
	for p, fi := range sockets {
		sameSocket(t, filepath.Join(dir, p), fi)
	}
	adminServing(t, filepath.Join(dir, "leaf-a", "admin.sock"))
	c, err := net.DialTimeout("unix", filepath.Join(dir, "root", "up.sock"), time.Second)
	if err != nil {
		t.Errorf("the first arbor up's control socket does not answer: %v", err)
	} else {
		c.Close()
	}
	mark := len(upOut.String())
	poll(t, time.Minute, "the first tree's demos still ok after the refusal", func() error {
		s := upOut.String()[mark:]
		for _, l := range []string{"leaf-a", "leaf-b"} {
			if !strings.Contains(s, "demo spiffe://example.org/demo/"+l+": mTLS ok, JWT ok") {
				return fmt.Errorf("no ok status line for the demo on %s since the refusal:\n%s", l, tailString(s, 8))
			}
		}
		return nil
	})

	// SIGKILL: the children stop by themselves (parent-death signal), the
	// lock goes with the process, and the file runs again.
	up.cmd.Process.Kill()
	<-up.exited
	waitGone(t, kids, 30*time.Second, "after arbor up was killed")
	again, r2 := startUpOnPipe(t, topo)
	readUntil(t, r2, "ready;", 3*time.Minute)
	go io.Copy(io.Discard, r2)
	killLeftovers(t, childrenOf(t, again.cmd.Process.Pid))
	again.cmd.Process.Signal(os.Interrupt)
	select {
	case <-again.exited:
		if again.err != nil {
			t.Errorf("the restarted arbor up exited with %v after Ctrl-C", again.err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the restarted arbor up did not stop within 90s of SIGINT")
	}
}
