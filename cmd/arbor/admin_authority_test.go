package main

import (
	"encoding/json"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// startLeveledServer is startServer with a runtime log level, as arbor
// server runs it.
func startLeveledServer(t *testing.T) (string, *slog.LevelVar) {
	t.Helper()
	dir := testkit.ShortDir(t)
	lv := new(slog.LevelVar)
	s := testkit.StartServer(t, server.Config{
		Name:        "root",
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr:  "127.0.0.1:0",
		StateDir:    filepath.Join(dir, "state"),
		AdminSocket: filepath.Join(dir, "a.sock"),
		LogLevel:    lv,
	})
	return s.AdminSocket(), lv
}

var authorityIDLine = regexp.MustCompile(`Authority ID: ([0-9a-zA-Z]+)`)

// TestAuthorityCommands runs arbor authority x509 and jwt through a whole
// rotation against a real server: show, prepare, activate, taint, revoke,
// with refusals printed as one line and a non-zero exit.
func TestAuthorityCommands(t *testing.T) {
	socket, _ := startLeveledServer(t)
	t.Setenv(admin.SocketEnv, "")
	for _, kind := range []string{"x509", "jwt"} {
		t.Run(kind, func(t *testing.T) {
			run := func(args ...string) string {
				t.Helper()
				out, stderr, err := arbor(t, "", append([]string{"authority", kind}, args...)...)
				if err != nil {
					t.Fatalf("authority %s %v: %v (stderr %q)", kind, args, err, stderr)
				}
				return out
			}
			refused := func(want string, args ...string) {
				t.Helper()
				_, _, err := arbor(t, "", append([]string{"authority", kind}, args...)...)
				if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
					t.Errorf("authority %s %v = %v, want one line containing %q", kind, args, err, want)
				}
			}
			out := run("show", "-socketPath", socket)
			m := authorityIDLine.FindStringSubmatch(out)
			if m == nil || !strings.Contains(out, "No prepared") || !strings.Contains(out, "No old") {
				t.Fatalf("show printed\n%s\nwant an active authority and none prepared or old", out)
			}
			first := m[1]
			refused("unexpected authority ID (InvalidArgument)", "activate", "--socket-path", socket, "--authority-id", "nope")
			refused("unable to taint current local authority (InvalidArgument)", "taint", "--socket-path", socket, "--authority-id", first)
			refused("--authority-id is required", "revoke", "--socket-path", socket)

			out = run("prepare", "--socket-path", socket, "--output", "json")
			var prep struct {
				PreparedAuthority struct {
					AuthorityID string `json:"authority_id"`
				} `json:"prepared_authority"`
			}
			if err := json.Unmarshal([]byte(out), &prep); err != nil || prep.PreparedAuthority.AuthorityID == "" {
				t.Fatalf("prepare --output json printed %q (%v)", out, err)
			}
			second := prep.PreparedAuthority.AuthorityID
			if out := run("activate", "-socketPath", socket, "-authorityID", second); !strings.Contains(out, "Activated") || !strings.Contains(out, second) {
				t.Fatalf("activate printed %q", out)
			}
			out = run("show", "--socket-path", socket)
			if !strings.Contains(out, "Old ") || !strings.Contains(out, first) || !strings.Contains(out, second) {
				t.Fatalf("show after activate printed\n%s\nwant %s active and %s old", out, second, first)
			}
			refused("untainted", "revoke", "--socket-path", socket, "--authority-id", first)
			if out := run("taint", "--socket-path", socket, "--authority-id", first); !strings.Contains(out, "Tainted") {
				t.Fatalf("taint printed %q", out)
			}
			refused("already tainted (InvalidArgument)", "taint", "--socket-path", socket, "--authority-id", first)
			if out := run("revoke", "--socket-path", socket, "--authority-id", first); !strings.Contains(out, "Revoked") || !strings.Contains(out, first) {
				t.Fatalf("revoke printed %q", out)
			}
			bundle, _, err := arbor(t, "", "bundle", "show", "--socket-path", socket, "--output", "json")
			if err != nil {
				t.Fatal(err)
			}
			if kind == "jwt" && strings.Contains(bundle, first) {
				t.Errorf("the revoked JWT key %s is still in the bundle", first)
			}
		})
	}
	_, _, err := arbor(t, "", "authority", "upstream", "taint", "--socket-path", socket, "--subject-key-id", "00ff")
	if err == nil || !strings.Contains(err.Error(), "upstream authority is not configured (FailedPrecondition)") {
		t.Errorf("authority upstream taint on a self-signed server = %v, want FailedPrecondition", err)
	}
}

// TestLoggerCommands: arbor logger get, set and reset change the running
// server's level.
func TestLoggerCommands(t *testing.T) {
	socket, lv := startLeveledServer(t)
	t.Setenv(admin.SocketEnv, "")
	out, _, err := arbor(t, "", "logger", "get", "--socket-path", socket)
	if err != nil || out != "Logger Level : info\nLaunch Level : info\n" {
		t.Fatalf("logger get = %q, %v", out, err)
	}
	out, _, err = arbor(t, "", "logger", "set", "-socketPath", socket, "-level", "debug")
	if err != nil || !strings.Contains(out, "Logger Level : debug") || lv.Level() != slog.LevelDebug {
		t.Fatalf("logger set debug = %q, %v (level %v)", out, err, lv.Level())
	}
	if _, _, err = arbor(t, "", "logger", "set", "--socket-path", socket, "--level", "loud"); err == nil || !strings.Contains(err.Error(), `--level "loud"`) {
		t.Errorf("logger set --level loud = %v, want a refusal naming the value", err)
	}
	if lv.Level() != slog.LevelDebug {
		t.Errorf("a refused logger set changed the level to %v", lv.Level())
	}
	out, _, err = arbor(t, "", "logger", "reset", "--socket-path", socket)
	if err != nil || !strings.Contains(out, "Logger Level : info") || lv.Level() != slog.LevelInfo {
		t.Fatalf("logger reset = %q, %v (level %v)", out, err, lv.Level())
	}
}
