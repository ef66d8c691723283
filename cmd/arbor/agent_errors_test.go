package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// An agent that has never attested and has no way to verify the server
// stops at once naming the flags that give it one.
func TestAgentRunWithoutBootstrapBundle(t *testing.T) {
	dir := testkit.ShortDir(t)
	_, _, err := arbor(t, "", "agent", "run", "--server-address", "127.0.0.1:1", "--trust-domain", "example.org",
		"--join-token", "t0ken", "--data-dir", filepath.Join(dir, "data"), "--socket-path", filepath.Join(dir, "a.sock"))
	if err == nil {
		t.Fatal("arbor agent run without a bootstrap bundle succeeded")
	}
	for _, want := range []string{"no bootstrap bundle", "--trust-bundle FILE", "--trust-bundle-url URL", "--insecure-bootstrap"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("arbor agent run without a bootstrap bundle = %q, want it to say %q", err, want)
		}
	}
}

// A join-token agent evicted at its server stops saying to generate a new
// join token.
func TestAgentRunEvictedJoinToken(t *testing.T) {
	dir := testkit.ShortDir(t)
	srv := testkit.StartServer(t, server.Config{
		Name:           "root",
		TrustDomain:    spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr:     "127.0.0.1:0",
		StateDir:       filepath.Join(dir, "state"),
		AdminSocket:    filepath.Join(dir, "a.sock"),
		JoinToken:      true,
		CAKeysInMemory: true,
	})
	sock := srv.AdminSocket()
	out, _, err := arbor(t, "", "token", "generate", "--socket-path", sock)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("token generate printed %q", out)
	}
	tokenPath, bundlePath, dataDir := filepath.Join(dir, "tok"), filepath.Join(dir, "b.pem"), filepath.Join(dir, "data")
	if err := os.WriteFile(tokenPath, []byte(m[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bundle, _, err := arbor(t, "", "bundle", "show", "--socket-path", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundlePath, []byte(bundle), 0o600); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, _, err := arbor(t, "", "agent", "run", "--server-address", srv.AgentAddr().String(), "--trust-domain", "example.org",
			"--trust-bundle", bundlePath, "--join-token-file", tokenPath, "--data-dir", dataDir,
			"--socket-path", filepath.Join(dir, "w.sock"), "--sync-interval", "200ms")
		done <- err
	}()
	testkit.Poll(t, 30*time.Second, "the agent attested", func() error {
		select {
		case err := <-done:
			t.Fatalf("arbor agent run stopped before the eviction: %v", err)
		default:
		}
		if !agent.Attested(dataDir) {
			return os.ErrNotExist
		}
		return nil
	})
	id := "spiffe://example.org/spire/agent/join_token/" + m[1]
	if _, _, err := arbor(t, "", "agent", "evict", "--spiffe-id", id, "--socket-path", sock); err != nil {
		t.Fatalf("arbor agent evict %s: %v", id, err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "generate a new join token") || !strings.Contains(err.Error(), "--join-token-file") {
			t.Errorf("evicted join-token agent stopped with %v, want it to say to generate a new join token", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the evicted agent did not stop within 30s")
	}
}
