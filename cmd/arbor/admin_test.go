package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

func TestSPIREArgs(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("socket-path", "", "")
	fs.String("parent-id", "", "")
	fs.StringArray("selector", nil, "")
	fs.Bool("admin", false, "")
	fs.String("hint", "", "")
	fs.Var(secondsValue{new(int32)}, "ttl", "")
	fs.BoolP("help", "h", false, "")
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"spire single dash", []string{"-socketPath", "/s", "-parentID", "spiffe://x/y"}, []string{"--socket-path", "/s", "--parent-id", "spiffe://x/y"}},
		{"spire double dash and equals", []string{"--socketPath=/s", "-ttl=60"}, []string{"--socket-path=/s", "--ttl=60"}},
		{"arbor spelling untouched", []string{"--socket-path", "/s", "--selector", "a:b"}, []string{"--socket-path", "/s", "--selector", "a:b"}},
		{"single dash long flag", []string{"-selector", "unix:uid:1", "-admin", "-hint", "h"}, []string{"--selector", "unix:uid:1", "--admin", "--hint", "h"}},
		{"value looking like a flag", []string{"-hint", "-admin"}, []string{"--hint", "-admin"}},
		{"shorthand and unknown kept", []string{"-h", "-bogus", "x"}, []string{"-h", "-bogus", "x"}},
		{"after double dash", []string{"--", "-admin"}, []string{"--", "-admin"}},
		{"stdin dash", []string{"-"}, []string{"-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spireArgs(fs, tt.in); !cmp.Equal(got, tt.want) {
				t.Errorf("spireArgs(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// startServer runs a real root server (SQLite in a temp dir) for the test.
func startServer(t *testing.T) string {
	t.Helper()
	dir := testkit.ShortDir(t)
	s := testkit.StartServer(t, server.Config{
		Name:           "root",
		TrustDomain:    spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr:     "127.0.0.1:0",
		StateDir:       filepath.Join(dir, "state"),
		AdminSocket:    filepath.Join(dir, "a.sock"),
		JoinToken:      true,
		CAKeysInMemory: true,
	})
	return s.AdminSocket()
}

// arbor runs the command tree with args and stdin, returning stdout, stderr
// and the error main would print.
func arbor(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestAdminCommands(t *testing.T) {
	socket := startServer(t)
	t.Setenv(admin.SocketEnv, "")

	// entry: create with spire-server's spellings, then from --data on stdin.
	out, stderr, err := arbor(t, "", "entry", "create", "-socketPath", socket, "-parentID", "spiffe://example.org/host",
		"-spiffeID", "spiffe://example.org/web", "-selector", "unix:uid:1000", "-x509SVIDTTL", "1h", "-dns", "web.example.org")
	if err != nil {
		t.Fatalf("entry create: %v (stderr %q)", err, stderr)
	}
	for _, want := range []string{"SPIFFE ID        : spiffe://example.org/web\n", "X509-SVID TTL    : 3600\n", "DNS name         : web.example.org\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("entry create printed\n%s\nwant %q", out, want)
		}
	}
	data := `{"entries": [{"spiffe_id": "spiffe://example.org/db", "parent_id": "spiffe://example.org/host", "selectors": [{"type": "unix", "value": "uid:5"}]},
		{"spiffe_id": "spiffe://example.org/web", "parent_id": "spiffe://example.org/host", "selectors": [{"type": "unix", "value": "uid:1000"}]}]}`
	out, stderr, err = arbor(t, data, "entry", "create", "--socket-path", socket, "--data", "-")
	if err == nil || err.Error() != "entry create: 1 of 2 entries failed" {
		t.Errorf("entry create --data (one duplicate) error = %v, want 1 of 2 failed", err)
	}
	if !strings.Contains(out, "spiffe://example.org/db") || !strings.Contains(stderr, "entry 2") || !strings.Contains(stderr, "(AlreadyExists)") {
		t.Errorf("entry create --data printed %q / %q; want db created and entry 2 AlreadyExists", out, stderr)
	}

	// entry show --output json parses; entry count through the environment variable.
	out, _, err = arbor(t, "", "entry", "show", "--socket-path", socket, "--output", "json")
	if err != nil {
		t.Fatalf("entry show: %v", err)
	}
	var list entryv1.ListEntriesResponse
	if err := protojson.Unmarshal([]byte(out), &list); err != nil || len(list.Entries) != 2 {
		t.Errorf("entry show --output json = %q (%v), want 2 entries", out, err)
	}
	t.Setenv(admin.SocketEnv, socket)
	if out, _, err := arbor(t, "", "entry", "count"); err != nil || out != "2 registration entries\n" {
		t.Errorf("entry count = %q, %v; want 2 registration entries", out, err)
	}
	webID := ""
	for _, e := range list.Entries {
		if e.SpiffeId.Path == "/web" {
			webID = e.Id
		}
	}
	if out, _, err := arbor(t, "", "entry", "update", "--entry-id", webID, "--parent-id", "spiffe://example.org/host",
		"--spiffe-id", "spiffe://example.org/web", "--selector", "unix:uid:2000"); err != nil || !strings.Contains(out, "Selector         : unix:uid:2000\n") {
		t.Errorf("entry update = %q, %v", out, err)
	}
	if out, _, err := arbor(t, `{"ids": ["`+webID+`"]}`, "entry", "delete", "--file", "-"); err != nil || out != "Deleted entry "+webID+"\n" {
		t.Errorf("entry delete = %q, %v", out, err)
	}

	// token, bundle, agent, healthcheck.
	if out, _, err := arbor(t, "", "token", "generate", "-ttl", "60", "-token", "t-1"); err != nil || out != "Token: t-1\n" {
		t.Errorf("token generate = %q, %v; want Token: t-1", out, err)
	}
	out, _, err = arbor(t, "", "bundle", "show")
	if err != nil {
		t.Fatalf("bundle show: %v", err)
	}
	block, rest := pem.Decode([]byte(out))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("bundle show printed %q, want PEM certificates", out)
	}
	if cert, err := x509.ParseCertificate(block.Bytes); err != nil || !cert.IsCA {
		t.Errorf("bundle show certificate: %v, want a CA", err)
	}
	if strings.TrimSpace(string(rest)) != "" && !strings.HasPrefix(string(rest), "-----BEGIN") {
		t.Errorf("bundle show has trailing text %q", rest)
	}
	if out, _, err := arbor(t, "", "bundle", "count"); err != nil || out != "1 bundle\n" {
		t.Errorf("bundle count = %q, %v", out, err)
	}
	if out, _, err := arbor(t, "", "agent", "list"); err != nil || out != "Found 0 attested agents\n\n" {
		t.Errorf("agent list = %q, %v", out, err)
	}
	if out, _, err := arbor(t, "", "healthcheck", "-socketPath", socket); err != nil || out != "Server is healthy.\n" {
		t.Errorf("healthcheck = %q, %v", out, err)
	}
}

func TestAdminCommandErrors(t *testing.T) {
	dir, err := os.MkdirTemp("", "arb")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	missing := filepath.Join(dir, "missing.sock")
	t.Setenv(admin.SocketEnv, "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"healthcheck missing socket", []string{"healthcheck", "--socket-path", missing},
			"healthcheck: cannot reach the server: admin socket " + missing + " does not exist (is the server running?)"},
		{"no socket at all", []string{"agent", "list"}, "agent list: " + admin.ErrNoSocket.Error()},
		{"missing entry flags", []string{"entry", "create", "--socket-path", missing, "--spiffe-id", "spiffe://example.org/a"},
			"entry create: --parent-id is required (or --node for a node entry)"},
		{"data and flags", []string{"entry", "create", "--data", "x.json", "--hint", "h"},
			"entry create: --data cannot be combined with --hint: put every field in the file"},
		{"update without id", []string{"entry", "update", "--spiffe-id", "spiffe://example.org/a"}, "entry update: --entry-id is required"},
		{"unknown flag", []string{"bundle", "show", "--colour"}, "bundle show: unknown flag: --colour (see --help)"},
		{"bad flag value", []string{"token", "generate", "--ttl", "soon"}, `token generate: invalid argument "soon" for "--ttl" flag: "soon" is neither seconds nor a duration like 1h30m (see --help)`},
		{"stray argument", []string{"entry", "show", "web"}, `entry show: unexpected argument "web" (flags start with --; see --help)`},
		{"unknown subcommand", []string{"bundle", "shw"}, `bundle: unknown command "shw" (see --help)`},
		{"bad output", []string{"entry", "count", "--output", "yaml"}, `entry count: --output: unknown output format "yaml" (want pretty or json)`},
		{"bad bundle format", []string{"bundle", "show", "--format", "der"}, `bundle show: --format: unknown bundle format "der" (want pem or spiffe)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := arbor(t, "", tt.args...)
			if err == nil {
				t.Fatalf("arbor %q: nil error, want %q", tt.args, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("arbor %q error:\n got %q\nwant %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestAdminHelp(t *testing.T) {
	for _, args := range [][]string{
		{"entry", "create", "--help"}, {"entry", "show", "-h"}, {"token", "generate", "--help"},
		{"bundle", "set", "--help"}, {"agent", "evict", "--help"}, {"healthcheck", "--help"},
		{"federation", "create", "--help"}, {"federation", "list", "--help"}, {"federation", "show", "--help"},
		{"federation", "update", "--help"}, {"federation", "delete", "--help"}, {"federation", "refresh", "--help"},
	} {
		out, _, err := arbor(t, "", args...)
		if err != nil {
			t.Errorf("arbor %q: %v", args, err)
			continue
		}
		if !strings.Contains(out, "Examples:") || !strings.Contains(out, "--socket-path") || !strings.Contains(out, "--output") {
			t.Errorf("arbor %q printed\n%s\nwant usage with Examples, --socket-path and --output", args, out)
		}
	}
}
