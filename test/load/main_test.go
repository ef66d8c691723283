package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/test/load/loadgen"
)

// startArbor runs an arbor server in-process (SQLite, loopback) and returns
// its admin socket and agent address.
func startArbor(t *testing.T) (sock, addr string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := server.Config{Name: "load", TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr: "127.0.0.1:0", AdminSocket: filepath.Join(dir, "a.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-srv.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready within 30s")
	}
	return cfg.AdminSocket, srv.AgentAddr().String()
}

// TestCommandJSON is the CI run of the load generator: a small bounded load
// against arbor, every call answered, a JSON report scripts can read.
func TestCommandJSON(t *testing.T) {
	sock, addr := startArbor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"--admin-socket", sock, "--server-addr", addr, "--agents", "4", "--entries", "2000",
		"--entries-per-agent", "20", "--shape", "mixed", "--interval", "200ms", "--duration", "2s",
		"--server-pid", fmt.Sprint(os.Getpid()), "--progress", "500ms", "--output", "json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var out output
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("--output json printed %q: %v", stdout.String(), err)
	}
	if out.Setup == nil || out.Load == nil {
		t.Fatalf("JSON report lacks setup or load: %s", stdout.String())
	}
	if out.Setup.Entries != 2000 || out.Setup.Agents != 4 || out.Setup.Errors+out.Load.Errors != 0 {
		t.Errorf("setup %d entries, %d agents; errors %d+%d; want 2000, 4, none", out.Setup.Entries, out.Setup.Agents, out.Setup.Errors, out.Load.Errors)
	}
	for _, rpc := range []string{loadgen.RPCSync, loadgen.RPCX509, loadgen.RPCJWT} {
		s := out.Load.RPCs[rpc]
		if s == nil || s.Calls == 0 || len(s.Errors) != 0 {
			t.Errorf("%s stats = %+v, want calls and no errors", rpc, s)
		}
	}
	if x := out.Load.RPCs[loadgen.RPCX509]; x != nil && x.Items != 20*out.Load.RPCs[loadgen.RPCSync].Calls {
		t.Errorf("X509-SVIDs %d, want 20 per sync (%d syncs)", x.Items, out.Load.RPCs[loadgen.RPCSync].Calls)
	}
	if out.Load.Server == nil || out.Load.Server.RSSPeakBytes == 0 {
		t.Errorf("no server process stats in %s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "loadgen: load ") {
		t.Errorf("no progress line on stderr:\n%s", stderr.String())
	}
}

func TestCommandText(t *testing.T) {
	sock, addr := startArbor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"--admin-socket", sock, "--server-addr", addr, "--agents", "2", "--entries", "50",
		"--iterations", "3", "--interval", "0", "--duration", "0", "--progress", "0"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"setup: 50 entries", loadgen.RPCSync, loadgen.RPCX509, loadgen.RPCJWT, "X509-SVIDs/s"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestCommandBadFlags(t *testing.T) {
	cases := [][]string{
		{"--output", "yaml", "--admin-socket", "/x"},
		{"--trust-domain", "Bad Domain", "--admin-socket", "/x"},
		{"--shape", "round", "--admin-socket", "/x"},
		{"--no-such-flag"},
		{"--admin-socket", "/x", "extra"},
	}
	for _, args := range cases {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
		if errors.Is(err, flag.ErrHelp) {
			t.Errorf("run(%q) = ErrHelp, want a usage error", args)
		}
	}
}
