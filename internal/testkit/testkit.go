// Package testkit is the one set of helpers arbor's tests share: a settable
// clock, short directories for Unix sockets, bounded contexts, polling with a
// deadline, a fresh PostgreSQL schema per test, and an in-process server
// started and stopped with the test. Only tests import it.
package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/internal/server"
)

// Clock is a settable test clock: the real time plus an offset, so servers
// keep running while a test moves their time. The zero value reads the real
// time.
type Clock struct{ offset atomic.Int64 }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// JumpTo makes the clock read about at (it keeps running from there).
func (c *Clock) JumpTo(at time.Time) { c.offset.Store(int64(time.Until(at))) }

// Reset puts the clock back to the real time.
func (c *Clock) Reset() { c.offset.Store(0) }

// ShortDir is a temporary directory with a short path (Unix socket paths are
// limited to 108 bytes and t.TempDir embeds the test name), removed at
// cleanup.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "arb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Context is a context bounded by d and cancelled at the test's cleanup.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// PollEvery is how often Poll tries.
const PollEvery = 50 * time.Millisecond

// Poll calls try every PollEvery until it returns nil, and fails the test
// with try's last error when timeout passes first.
func Poll(t testing.TB, timeout time.Duration, what string, try func() error) {
	t.Helper()
	if err := PollErr(timeout, what, try); err != nil {
		t.Fatal(err)
	}
}

// PollErr is Poll returning the failure instead of failing the test.
func PollErr(timeout time.Duration, what string, try func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still failing after %v: %w", what, timeout, err)
		}
		time.Sleep(PollEvery)
	}
}

// DefaultPostgresDSN is the database test/run sets up.
const DefaultPostgresDSN = "postgres://arbor:arbor@127.0.0.1:5432/arbor_test?sslmode=disable"

// PostgresDSN creates a fresh schema in the test database
// (ARBOR_TEST_POSTGRES_DSN, or DefaultPostgresDSN), drops it at cleanup, and
// returns a DSN whose search_path is that schema. PostgreSQL not being
// reachable fails the test: it never skips.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("ARBOR_TEST_POSTGRES_DSN")
	if base == "" {
		base = DefaultPostgresDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at %s: %v\n(start it with `pg_ctlcluster 15 main start`, or set ARBOR_TEST_POSTGRES_DSN; .ci/run installs and starts it)", base, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "arbor_t_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("ARBOR_TEST_POSTGRES_DSN must be a URL: %v", err)
	}
	q := u.Query()
	q.Set("options", "-csearch_path="+schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Server is an in-process arbor server run for a test.
type Server struct {
	*server.Server
	// Admin is a client connection to its admin socket.
	Admin *grpc.ClientConn

	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// StartServer runs a server with cfg until Stop or the test's cleanup,
// waiting until it is ready (30 s at most), and connects to its admin
// socket. cfg.ListenAddr "127.0.0.1:0" picks a port: read it from AgentAddr.
func StartServer(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatalf("server Listen: %v", err)
	}
	s := &Server{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		cancel()
		t.Fatalf("server stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server not ready within 30s")
	}
	conn, err := grpc.NewClient("unix://"+cfg.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop(t)
		t.Fatal(err)
	}
	s.Admin = conn
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Stop stops the server gracefully (30 s at most) and closes the admin
// connection; later calls do nothing.
func (s *Server) Stop(t testing.TB) {
	if s.stopped {
		return
	}
	s.stopped = true
	if s.Admin != nil {
		s.Admin.Close()
	}
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("server Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("server did not stop within 30s")
	}
}
