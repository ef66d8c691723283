package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/cli/launcher"
	"github.com/arborid/arbor/internal/tier"
	"github.com/arborid/arbor/internal/unixsock"
	"github.com/arborid/arbor/topology"
)

// examplesIn copies the examples named into a fresh short directory (Unix
// socket paths are limited) and returns their paths there.
func examplesIn(t *testing.T, names ...string) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "arb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var paths []string
	for _, name := range names {
		src, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, src, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	return paths
}

func mustParseFile(t *testing.T, path string) *topology.File {
	t.Helper()
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatalf("ParseFile(%s):\n%s", path, topology.FormatDiagnostics(diags, nil))
	}
	return f
}

// `arbor up --stop root single-server.hcl` while the quickstart's arbor up
// runs beside it must not reach the quickstart's control socket (both roots
// are named root; their state directories, which hold the control socket,
// were both .arbor/root).
func TestUpStopReachesOnlyItsOwnFile(t *testing.T) {
	paths := examplesIn(t, "quickstart.hcl", "single-server.hcl")
	quick := mustParseFile(t, paths[0])
	sock, err := launcher.ControlSocket(quick)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	// The quickstart's running arbor up, as far as its control socket goes.
	lis, err := unixsock.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Write([]byte("stopped\n"))
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := newRootCommand()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"up", "--stop", "root", paths[1]})
	err = cmd.ExecuteContext(ctx)
	if n := asked.Load(); n != 0 {
		t.Fatalf("arbor up --stop root %s reached the quickstart's control socket %s (%d request(s)); output %q, err %v", paths[1], sock, n, out.String(), err)
	}
	if err == nil || !strings.Contains(err.Error(), "no arbor up running for "+paths[1]) {
		t.Errorf("arbor up --stop root %s = %v, want no arbor up running for it", paths[1], err)
	}
}

// `arbor server --topology single-server.hcl --node root` must not open the
// state (CA, datastore, admin socket) of the quickstart's root.
func TestServerStateIsItsFiles(t *testing.T) {
	paths := examplesIn(t, "quickstart.hcl", "single-server.hcl")
	quick, single := mustParseFile(t, paths[0]), mustParseFile(t, paths[1])
	qs, err := tier.ServerConfig(quick, "root")
	if err != nil {
		t.Fatal(err)
	}
	ss, err := tier.ServerConfig(single, "root")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(paths[0])
	for _, c := range []struct{ what, quick, single, want string }{
		{"state directory", qs.Config.StateDir, ss.Config.StateDir, filepath.Join(dir, ".arbor", "single-server", "root")},
		{"SQLite file", qs.Config.SQLitePath, ss.Config.SQLitePath, filepath.Join(dir, ".arbor", "single-server", "root", "datastore.sqlite3")},
		{"admin socket", qs.Config.AdminSocket, ss.Config.AdminSocket, filepath.Join(dir, ".arbor", "single-server", "root", "admin.sock")},
	} {
		if c.quick == c.single {
			t.Errorf("root's %s is the same for quickstart.hcl and single-server.hcl: %s", c.what, c.quick)
		}
		if c.single != c.want {
			t.Errorf("single-server.hcl root's %s = %s, want %s", c.what, c.single, c.want)
		}
	}
}
