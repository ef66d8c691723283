package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/topology"
)

const topo = `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:0"
  health_listen = "off"
  state_dir     = %[1]q
  admin_socket  = %[2]q
  ca_ttl        = "48h"
  entry "web" {
    spiffe_id = "spiffe://example.org/web"
    parent_id = "spiffe://example.org/node/a"
    selectors = ["unix:uid:1000"]
    x509_svid_ttl = %[3]q
  }
}
server "child" {
  parent        = "root"
  listen        = "127.0.0.1:9"
  health_listen = "off"
  state_dir     = %[4]q
  ca_ttl        = "24h"
}
`

func TestApplyIsIdempotent(t *testing.T) {
	dir, err := os.MkdirTemp("", "arr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "root.sock")
	write := func(ttl string) *topology.File {
		path := filepath.Join(dir, "t.hcl")
		os.WriteFile(path, []byte(fmt.Sprintf(topo, filepath.Join(dir, "root"), sock, ttl, filepath.Join(dir, "child"))), 0o600)
		f, diags := topology.ParseFile(path)
		if diags.HasErrors() {
			t.Fatal(topology.FormatDiagnostics(diags, nil))
		}
		return f
	}
	f := write("10m")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := server.New(ctx, server.Config{Name: "root", TrustDomain: f.TrustDomain, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(dir, "root"), AdminSocket: sock, JoinToken: true})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	defer func() { stop(); <-done }()
	<-srv.Ready()

	run := func(f *topology.File, dry bool) string {
		t.Helper()
		var out bytes.Buffer
		if err := Run(ctx, f, Options{DryRun: dry, UID: 4242, Out: &out}); err != nil {
			t.Fatalf("Run: %v\n%s", err, out.String())
		}
		return out.String()
	}
	wantLines := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	out := run(f, true)
	wantLines(out, "+ root: create spiffe://example.org/arbor/server/child <- spiffe://example.org/arbor/agent/child",
		"+ root: create spiffe://example.org/web <- spiffe://example.org/node/a", "would apply 2 change(s)")
	out = run(f, true)
	wantLines(out, "would apply 2 change(s)") // dry run changed nothing

	out = run(f, false)
	wantLines(out, "applied 2 change(s)")
	out = run(f, false)
	wantLines(out, "= root: unchanged spiffe://example.org/arbor/server/child", "= root: unchanged spiffe://example.org/web", "applied 0 change(s)")

	out = run(write("20m"), false)
	wantLines(out, "~ root: update spiffe://example.org/web", "applied 1 change(s)")

	// The downstream entry carries the child's selectors and the flag.
	conn, err := admin.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f = write("20m")
	want, err := DesiredEntries(f, f.Servers[0], 4242)
	if err != nil {
		t.Fatal(err)
	}
	actions, err := Plan(ctx, conn, "root", want)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range actions {
		if a.Kind != "unchanged" {
			t.Errorf("after apply, %v", a)
		}
		if strings.Contains(idString(a.Entry.SpiffeId), "/arbor/server/child") {
			if !a.Entry.Downstream || len(a.Entry.Selectors) != 1 || a.Entry.Selectors[0].Value != "uid:4242" {
				t.Errorf("downstream entry = %v, want downstream with unix:uid:4242", a.Entry)
			}
		}
	}
}

// DesiredEntries refuses, before any server sees them, the IDs SPIRE's
// server API would: a File built in code can hold what topology.Parse
// refuses.
func TestDesiredEntriesRefusesWhatSPIRERefuses(t *testing.T) {
	parse := func(t *testing.T) *topology.File {
		t.Helper()
		dir := t.TempDir()
		src := fmt.Sprintf(topo, filepath.Join(dir, "root"), filepath.Join(dir, "root.sock"), "10m", filepath.Join(dir, "child"))
		f, diags := topology.Parse([]byte(src), "t.hcl")
		if diags.HasErrors() {
			t.Fatal(topology.FormatDiagnostics(diags, nil))
		}
		return f
	}
	td := func(f *topology.File, path string) spiffeid.ID {
		if path == "" {
			return f.TrustDomain.ID()
		}
		return spiffeid.RequireFromPath(f.TrustDomain, path)
	}
	cases := []struct {
		name   string
		change func(f *topology.File)
		want   error
	}{
		{"entry ID without a path", func(f *topology.File) { f.Servers[0].Entries[0].SPIFFEID = td(f, "") }, idpolicy.ErrEmptyPath},
		{"entry ID under /spire", func(f *topology.File) { f.Servers[0].Entries[0].SPIFFEID = td(f, "/spire/web") }, idpolicy.ErrReservedPath},
		{"entry parent without a path", func(f *topology.File) { f.Servers[0].Entries[0].ParentID = td(f, "") }, idpolicy.ErrEmptyPath},
		{"entry parent in another trust domain", func(f *topology.File) {
			f.Servers[0].Entries[0].ParentID = spiffeid.RequireFromString("spiffe://other.org/node")
		}, idpolicy.ErrForeignTrustDomain},
		{"downstream entry ID under /spire", func(f *topology.File) { f.Servers[1].SPIFFEID = td(f, "/spire/server") }, idpolicy.ErrReservedPath},
		{"downstream parent without a path", func(f *topology.File) { f.Servers[1].Agent.SPIFFEID = td(f, "") }, idpolicy.ErrEmptyPath},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := parse(t)
			if _, err := DesiredEntries(f, f.Servers[0], 4242); err != nil {
				t.Fatalf("DesiredEntries of the unchanged file = %v", err)
			}
			c.change(f)
			if _, err := DesiredEntries(f, f.Servers[0], 4242); !errors.Is(err, c.want) {
				t.Fatalf("DesiredEntries = %v, want %v", err, c.want)
			}
		})
	}
	f := parse(t)
	f.Servers[1].Agent.SPIFFEID = td(f, "/spire/agent/child")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The alias is refused before any call: a nil connection is never used.
	if _, err := JoinToken(ctx, nil, f.Servers[1], time.Minute); !errors.Is(err, idpolicy.ErrReservedPath) {
		t.Fatalf("JoinToken with alias %s = %v, want %v", f.Servers[1].Agent.SPIFFEID, err, idpolicy.ErrReservedPath)
	}
}
