package launcher

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/topology"
)

// A block with replicas on SQLite is refused before anything starts, in
// one line that says what replicas need.
func TestUpRefusesReplicasOnSQLite(t *testing.T) {
	dir := t.TempDir()
	f := parse(t, filepath.Join(dir, "lite.hcl"), `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:9301"
  health_listen = "off"
  replicas      = 2
}
`)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Up(ctx, []*topology.File{f}, Options{Exe: "/nonexistent/arbor", Out: &out})
	want := `server "root" of ` + f.Path + ` has replicas = 2 on sqlite, but replicas need one PostgreSQL database they share: set datastore "postgres" { dsn = env("ARBOR_POSTGRES_DSN") }`
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Up = %v, want one line containing %q", err, want)
	}
	if out.Len() != 0 {
		t.Errorf("Up printed %q before refusing", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, ".arbor")); !os.IsNotExist(err) {
		t.Errorf("Up left state behind (%v)", err)
	}
}

// syncBuffer is an io.Writer the test reads while Up writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildArbor builds the arbor binary arbor up starts its children with.
func buildArbor(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "arbor")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/arborid/arbor/cmd/arbor").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// portRun returns the first of n consecutive loopback ports that are free
// now: a block's replicas listen on its port plus K-1.
func portRun(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 200; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base+n > 65535 {
			continue
		}
		held, ok := []net.Listener{}, true
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// arbor up runs every replica of a PostgreSQL tier, a root's and a
// downstream tier's (each downstream replica with its own co-located
// agent): all serve, each with its own CA, status and logs list each one,
// and --stop NAME/2 stops that replica only.
func TestUpRunsReplicas(t *testing.T) {
	bin := buildArbor(t)
	dir := testkit.ShortDir(t)
	rootDSN, leafDSN := testkit.PostgresDSN(t), testkit.PostgresDSN(t)
	rp, rh, lp, lh := portRun(t, 2), portRun(t, 2), portRun(t, 2), portRun(t, 2)
	src := fmt.Sprintf(`trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:%d"
  health_listen = "127.0.0.1:%d"
  ca_ttl        = "48h"
  replicas      = 2
  datastore "postgres" { dsn = %q }
}
server "leaf" {
  parent        = "root"
  listen        = "127.0.0.1:%d"
  health_listen = "127.0.0.1:%d"
  ca_ttl        = "24h"
  replicas      = 2
  datastore "postgres" { dsn = %q }
  agent {
    node_attestor "join_token" {}
  }
}
`, rp, rh, rootDSN, lp, lh, leafDSN)
	path := filepath.Join(dir, "ha.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatal(topology.FormatDiagnostics(diags, nil))
	}
	files := []*topology.File{f}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	upCtx, stopUp := context.WithCancel(ctx)
	var out syncBuffer
	upErr := make(chan error, 1)
	began := time.Now()
	go func() {
		upErr <- Up(upCtx, files, Options{Exe: bin, Out: &out, StatusEvery: time.Hour, StartTimeout: 2 * time.Minute})
	}()
	defer func() {
		stopUp()
		select {
		case err := <-upErr:
			if err != nil {
				t.Errorf("Up: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("Up did not return within a minute of its context ending")
		}
		if t.Failed() {
			t.Logf("arbor up output:\n%s", out.String())
		}
	}()
	deadline := time.After(4 * time.Minute)
	for !strings.Contains(out.String(), "\nready; press Ctrl-C") {
		select {
		case err := <-upErr:
			upErr <- err
			t.Fatalf("Up returned before it was ready: %v", err)
		case <-deadline:
			t.Fatal("arbor up not ready within 4 minutes")
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("arbor up of 2 root and 2 leaf replicas (with the demo) ready in %.1fs", time.Since(began).Seconds())

	// Replica 1 starts first, each one serving before the next.
	o := out.String()
	order := []string{"root: serving on 127.0.0.1:" + fmt.Sprint(rp) + " (replica 1 of 2)", "root/2: serving on 127.0.0.1:" + fmt.Sprint(rp+1) + " (replica 2 of 2)",
		"leaf: registering with root", "leaf: serving on", "leaf/2: registering with root", "leaf/2: serving on 127.0.0.1:" + fmt.Sprint(lp+1)}
	at := 0
	for _, want := range order {
		i := strings.Index(o[at:], want)
		if i < 0 {
			t.Fatalf("arbor up output lacks %q after byte %d (in this order: %q)", want, at, order)
		}
		at += i
	}

	states := func() map[string]TierStatus {
		t.Helper()
		ts, err := Status(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]TierStatus{}
		for _, tr := range ts.Tiers {
			m[tr.Name] = tr
		}
		return m
	}
	st := states()
	for _, name := range []string{"root", "root/2", "leaf", "leaf/2"} {
		if s, ok := st[name]; !ok || s.State != TierServing || s.CANotAfter == nil {
			t.Errorf("status of %s = %+v, want serving with a CA", name, s)
		}
	}
	if len(st) != 4 {
		t.Errorf("status lists %d servers, want root, root/2, leaf, leaf/2: %v", len(st), st)
	}
	if r := st["leaf/2"].ParentReachable; r == nil || !*r {
		t.Errorf("leaf/2 parent reachable = %v, want true (it got its CA from root through its own agent)", r)
	}

	// Each replica keeps its own CA: the root's bundle, read at either
	// replica, holds both roots; each leaf replica's agent is attested.
	for _, node := range []string{"root", "root/2"} {
		r, err := f.Replica(node)
		if err != nil {
			t.Fatal(err)
		}
		c, err := admin.Dial(r.AdminSocket)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Bundle(ctx)
		agents, _, cerr := c.Counts(ctx)
		c.Close()
		if err != nil || cerr != nil {
			t.Fatalf("%s: bundle %v, counts %v", node, err, cerr)
		}
		if len(b.X509Authorities) != 2 {
			t.Errorf("bundle at %s holds %d X.509 authorities, want 2 (one per root replica)", node, len(b.X509Authorities))
		}
		// Both leaf replicas' co-located agents, in the shared database.
		if agents < 2 {
			t.Errorf("%s knows %d agents, want at least the 2 co-located agents of leaf and leaf/2", node, agents)
		}
	}
	// Its own log file, in its own state directory.
	r2, _ := f.Replica("root/2")
	l2, _ := f.Replica("leaf/2")
	for _, p := range []string{filepath.Join(r2.StateDir, "logs", "server.log"), filepath.Join(l2.StateDir, "logs", "server.log"), filepath.Join(l2.StateDir, "logs", "leaf-agent.log")} {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("server ready")) && !strings.HasSuffix(p, "agent.log") || len(b) == 0 {
			t.Errorf("log %s: %d bytes, %v; want the replica's own log", p, len(b), err)
		}
	}
	var logs bytes.Buffer
	if err := Logs(ctx, f, []string{"root/2"}, LogsOptions{Out: &logs}); err != nil || !strings.Contains(logs.String(), "root/2/server") || strings.Contains(logs.String(), "root/server") {
		t.Errorf("Logs(root/2) = %v, want only root/2's lines:\n%.2000s", err, logs.String())
	}

	// --stop root/2 stops that replica only.
	if msg, err := Control(ctx, files, "stop", "root/2"); err != nil {
		t.Fatalf("stop root/2: %v (%s)", err, msg)
	}
	st = states()
	for name, want := range map[string]string{"root": TierServing, "root/2": TierDown, "leaf": TierServing, "leaf/2": TierServing} {
		if st[name].State != want {
			t.Errorf("after --stop root/2, %s is %s, want %s", name, st[name].State, want)
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", rp+1), time.Second); err == nil {
		c.Close()
		t.Errorf("root/2's port %d still accepts connections after --stop root/2", rp+1)
	}
	if _, err := Control(ctx, files, "stop", "root/3"); err == nil || !strings.Contains(err.Error(), `server "root" has 2 replicas`) {
		t.Errorf("stop root/3 = %v, want the replicas named", err)
	}
	if msg, err := Control(ctx, files, "start", "root/2"); err != nil {
		t.Fatalf("start root/2: %v (%s)", err, msg)
	}
	if s := states()["root/2"]; s.State != TierServing {
		t.Errorf("after --start root/2, it is %s, want serving", s.State)
	}
	var text bytes.Buffer
	ts, err := Status(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	ts.WriteText(&text)
	for _, want := range []string{"  root  ", "  root/2  ", "    leaf  ", "    leaf/2  "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("arbor status text lacks %q:\n%s", want, text.String())
		}
	}
}
