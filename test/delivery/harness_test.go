// Package delivery tests `arbor svid watch` with the programs it is for: a
// real nginx terminating mTLS and a real PostgreSQL authenticating clients
// by certificate, both reading the files the command keeps and reloaded by
// it across rotations, against an in-process arbor server and agent whose
// unix workload attestor identifies the arbor process by its uid.
package delivery

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/internal/testkit/freeport"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// arborBin is the arbor binary built by TestMain; buildErr why it is not.
var arborBin string
var buildErr error

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-delivery-bin")
	if err == nil {
		arborBin = filepath.Join(dir, "arbor")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		out, err := exec.CommandContext(ctx, "go", "build", "-o", arborBin, "github.com/arborid/arbor/cmd/arbor").CombinedOutput()
		cancel()
		if err != nil {
			buildErr = fmt.Errorf("building arbor: %v\n%s", err, out)
		}
	} else {
		buildErr = err
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tree is an in-process server and an agent whose Workload API gives every
// process of this uid the entries registered with entry.
type tree struct {
	t       *testing.T
	srv     *testkit.Server
	agentID spiffeid.ID
	socket  string
}

func startTree(t *testing.T) *tree {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	dir := testkit.ShortDir(t)
	srv := testkit.StartServer(t, server.Config{
		Name: "delivery", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true,
	})
	ctx := testkit.Context(t, 30*time.Second)
	jt, err := agentv1.NewAgentClient(srv.Admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		TrustDomain: td, ServerAddress: srv.AgentAddr().String(), InsecureBootstrap: true,
		DataDir: filepath.Join(dir, "agent"), SocketPath: filepath.Join(dir, "api.sock"),
		JoinToken: jt.Value, SyncInterval: 200 * time.Millisecond,
		WorkloadAttestors: []agent.WorkloadAttestor{att},
	}
	testkit.StartAgent(t, cfg, 30*time.Second)
	return &tree{t: t, srv: srv, agentID: spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+jt.Value), socket: cfg.SocketPath}
}

// entry registers id for every process of this uid (unix:uid), with an
// X509-SVID TTL in seconds and optional DNS names (the first becomes the
// subject's CN).
func (tr *tree) entry(id spiffeid.ID, ttl int32, dns ...string) {
	tr.t.Helper()
	resp, err := entryv1.NewEntryClient(tr.srv.Admin).BatchCreateEntry(testkit.Context(tr.t, 30*time.Second), &entryv1.BatchCreateEntryRequest{
		Entries: []*types.Entry{{
			ParentId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: tr.agentID.Path()},
			SpiffeId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
			Selectors:   []*types.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(os.Getuid())}},
			X509SvidTtl: ttl, DnsNames: dns,
		}},
	})
	if err != nil {
		tr.t.Fatalf("BatchCreateEntry: %v", err)
	}
	if st := resp.Results[0].Status; st.Code != 0 {
		tr.t.Fatalf("BatchCreateEntry %s: %v", id, st)
	}
}

// source is a go-spiffe X509Source on the agent that presents id's SVID.
func (tr *tree) source(id spiffeid.ID) *workloadapi.X509Source {
	tr.t.Helper()
	ctx := testkit.Context(tr.t, 30*time.Second)
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+tr.socket)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == id {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		tr.t.Fatalf("NewX509Source: %v", err)
	}
	tr.t.Cleanup(func() { src.Close() })
	testkit.Poll(tr.t, 30*time.Second, "the source has "+id.String(), func() error {
		s, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		if s.ID != id {
			return fmt.Errorf("source presents %s", s.ID)
		}
		return nil
	})
	return src
}

// watchProc is a running `arbor svid watch`.
type watchProc struct {
	health string // base URL of its health endpoint
	logs   *lockedBuffer
}

// runWatch starts `arbor svid watch args... --health-listen 127.0.0.1:PORT`
// against the tree's agent; it is stopped with SIGTERM at cleanup and must
// exit 0.
func (tr *tree) runWatch(args ...string) *watchProc {
	t := tr.t
	t.Helper()
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args = append([]string{"svid", "watch", "--socket-path", tr.socket, "--health-listen", addr}, args...)
	cmd := exec.Command(arborBin, args...)
	w := &watchProc{health: "http://" + addr, logs: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = w.logs, w.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("arbor svid watch exited with %v after SIGINT, want 0; its log:\n%s", err, w.logs)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("arbor svid watch did not stop within 30s; its log:\n%s", w.logs)
		}
		if t.Failed() {
			t.Logf("arbor svid watch log:\n%s", w.logs)
		}
	})
	return w
}

// waitReady polls /ready until it answers 200.
func (w *watchProc) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	testkit.Poll(t, timeout, "arbor svid watch /ready", func() error {
		resp, err := c.Get(w.health + "/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready = %d %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil
	})
}

// waitFiles polls until every path exists.
func waitFiles(t *testing.T, timeout time.Duration, paths ...string) {
	t.Helper()
	testkit.Poll(t, timeout, "files written", func() error {
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				return err
			}
		}
		return nil
	})
}

func freePort(t *testing.T) int { return freeport.Must(t) }

// lockedBuffer is a bytes.Buffer safe for a process's two output pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many lines contain s.
func (l *lockedBuffer) count(s string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// lookBin finds a program on PATH or in the usual system directories (root's
// PATH in a container may lack /usr/sbin).
func lookBin(t *testing.T, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s is not installed: %s (test/run installs it)", name, install)
	return ""
}
