package server_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/internal/unixsock"
)

func ownershipConfig(t *testing.T) server.Config {
	dir := testkit.ShortDir(t)
	return server.Config{
		Name: "first", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), StateDir: filepath.Join(dir, "state"),
		JoinToken: true,
	}
}

func requireServing(t *testing.T, s *testkit.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(s.Admin).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("the first server's health = %v (%v), want SERVING", resp.GetStatus(), err)
	}
}

// A second server on a running one's state directory is refused by New,
// before it opens the datastore or binds anything, naming the holder.
func TestSecondServerOnStateDirRefused(t *testing.T) {
	cfg := ownershipConfig(t)
	first := testkit.StartServer(t, cfg)
	before, err := os.Stat(filepath.Join(cfg.StateDir, "datastore.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}

	second := cfg
	second.Name = "second"
	second.AdminSocket = filepath.Join(testkit.ShortDir(t), "admin.sock")
	_, err = server.New(context.Background(), second)
	var held *statelock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second New on %s = %v, want a *statelock.HeldError", cfg.StateDir, err)
	}
	want := "state directory " + cfg.StateDir + " is in use by pid "
	if held.PID != os.Getpid() || held.Holder != "server first" || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("refusal %q (pid %d, holder %q), want %q... with pid %d and holder \"server first\"", err, held.PID, held.Holder, want, os.Getpid())
	}
	if err := server.CheckStateDir(cfg.StateDir); !errors.Is(err, statelock.ErrInUse) {
		t.Errorf("CheckStateDir of the held directory = %v, want ErrInUse", err)
	}
	if _, err := os.Lstat(second.AdminSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused server created its admin socket (%v)", err)
	}
	after, err := os.Stat(filepath.Join(cfg.StateDir, "datastore.sqlite3"))
	if err != nil || !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Errorf("the refused server touched the datastore file (%v)", err)
	}
	requireServing(t, first)

	// Released when Run returns: the next server starts on the same state.
	first.Stop(t)
	if err := server.CheckStateDir(cfg.StateDir); err != nil {
		t.Fatalf("CheckStateDir after the first server stopped = %v, want nil", err)
	}
	next := testkit.StartServer(t, second)
	requireServing(t, next)
}

// A second server with its own state directory but a running one's admin
// socket is refused when it binds, and the first one's socket stays.
func TestSecondServerOnAdminSocketRefused(t *testing.T) {
	cfg := ownershipConfig(t)
	first := testkit.StartServer(t, cfg)
	before, err := os.Lstat(cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	second := cfg
	second.StateDir = filepath.Join(testkit.ShortDir(t), "state")
	srv, err := server.New(context.Background(), second)
	if err != nil {
		t.Fatalf("New with its own state directory: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Run(ctx)
	if !errors.Is(err, unixsock.ErrInUse) || !strings.Contains(err.Error(), "socket "+cfg.AdminSocket+" is served by another process") {
		t.Fatalf("Run on a served admin socket = %v, want unixsock.ErrInUse naming the socket", err)
	}
	after, err := os.Lstat(cfg.AdminSocket)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the first server's admin socket was replaced or removed (%v)", err)
	}
	requireServing(t, first)
	if err := server.CheckStateDir(second.StateDir); err != nil {
		t.Errorf("the refused server's state directory is still held after Run returned: %v", err)
	}
}

// A server that stops removes its admin socket only while it is its own.
func TestServerStopKeepsAnotherSocket(t *testing.T) {
	cfg := ownershipConfig(t)
	first := testkit.StartServer(t, cfg)
	if err := os.Remove(cfg.AdminSocket); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	theirs, err := os.Lstat(cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	first.Stop(t)
	now, err := os.Lstat(cfg.AdminSocket)
	if err != nil || !os.SameFile(theirs, now) {
		t.Fatalf("the stopped server removed a socket it did not create (%v)", err)
	}
}

// A stale admin socket file (a server killed while serving) is replaced,
// and the server's own is removed when it stops.
func TestServerReplacesStaleAdminSocket(t *testing.T) {
	cfg := ownershipConfig(t)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.AdminSocket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	s := testkit.StartServer(t, cfg)
	requireServing(t, s)
	s.Stop(t)
	if _, err := os.Lstat(cfg.AdminSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stopped server left its admin socket (%v)", err)
	}
}
