package agent_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/internal/unixsock"
)

// runRefused runs an agent on cfg and requires Run to return at once with
// an error that is (errors.Is) is.
func runRefused(t *testing.T, cfg agent.Config, is error) error {
	t.Helper()
	a, err := agent.New(cfg)
	mustOK(t, err, "agent.New")
	done := make(chan error, 1)
	ctx, cancel := contextFor(t)
	defer cancel()
	go func() { done <- a.Run(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, is) {
			t.Fatalf("second agent's Run = %v, want %v", err, is)
		}
		return err
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatalf("second agent still running after 10s, want it refused at once")
		return nil
	}
}

// A second agent on the data directory of a running one is refused before
// it reads anything, naming the holder; the first one keeps serving.
func TestSecondAgentOnDataDirRefused(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)
	agents := srv.countAgents()

	second := srv.agentConfig(t, srv.token(), att)
	second.DataDir = cfg.DataDir
	err := runRefused(t, second, statelock.ErrInUse)
	var held *statelock.HeldError
	if !errors.As(err, &held) || held.PID != os.Getpid() || !strings.Contains(err.Error(), "data directory "+cfg.DataDir) {
		t.Errorf("refusal %q, want a *HeldError naming pid %d and data directory %s", err, os.Getpid(), cfg.DataDir)
	}
	if _, err := os.Lstat(second.SocketPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused agent created its socket %s (%v)", second.SocketPath, err)
	}
	if got := srv.countAgents(); got != agents {
		t.Errorf("server has %d agents after the refusal, want %d: the second one attested", got, agents)
	}
	if _, err := fetchX509(ctxT(t), socketAddr(cfg)); err != nil {
		t.Errorf("the first agent no longer serves: %v", err)
	}
}

// A second agent with its own data directory but the first one's socket is
// refused before it attests (its join token stays unspent) and leaves the
// first one's socket in place.
func TestSecondAgentOnSocketRefused(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)
	agents := srv.countAgents()
	before, err := os.Lstat(cfg.SocketPath)
	mustOK(t, err, "stat the first agent's socket")

	second := srv.agentConfig(t, srv.token(), att)
	second.SocketPath = cfg.SocketPath
	err = runRefused(t, second, unixsock.ErrInUse)
	if !strings.Contains(err.Error(), "socket "+cfg.SocketPath+" is served by another process") {
		t.Errorf("refusal %q, want it to name the socket", err)
	}
	if got := srv.countAgents(); got != agents {
		t.Errorf("server has %d agents after the refusal, want %d: the second one attested", got, agents)
	}
	after, err := os.Lstat(cfg.SocketPath)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the first agent's socket was replaced or removed (%v)", err)
	}
	if _, err := fetchX509(ctxT(t), socketAddr(cfg)); err != nil {
		t.Errorf("the first agent no longer serves: %v", err)
	}
}

// A socket file left by an agent that died (nothing listens) is replaced.
func TestAgentReplacesStaleSocket(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.SocketPath, Net: "unix"})
	mustOK(t, err, "binding the stale socket")
	l.SetUnlinkOnClose(false)
	l.Close()
	runAgent(t, cfg)
	if _, err := fetchX509(ctxT(t), socketAddr(cfg)); err != nil {
		t.Errorf("agent over a stale socket file does not serve: %v", err)
	}
}

// An agent that stops removes its socket only while it is still its own:
// one another process bound there since stays.
func TestAgentStopKeepsAnotherSocket(t *testing.T) {
	srv := startServer(t, nil)
	cfg := srv.agentConfig(t, srv.token(), newPIDAttestor())
	a := runAgent(t, cfg)
	mustOK(t, os.Remove(cfg.SocketPath), "removing the agent's socket file")
	other, err := net.Listen("unix", cfg.SocketPath)
	mustOK(t, err, "binding another socket at the path")
	defer other.Close()
	theirs, err := os.Lstat(cfg.SocketPath)
	mustOK(t, err, "stat")
	if err := a.stop(t); err != nil {
		t.Fatalf("agent Run: %v", err)
	}
	now, err := os.Lstat(cfg.SocketPath)
	if err != nil || !os.SameFile(theirs, now) {
		t.Fatalf("the stopped agent removed a socket it did not create (%v)", err)
	}
	c, err := net.DialTimeout("unix", cfg.SocketPath, time.Second)
	if err != nil {
		t.Fatalf("the other socket no longer answers: %v", err)
	}
	c.Close()
}

// The lock dies with the agent: after Run returns, the data directory is
// free for the next start.
func TestAgentReleasesDataDir(t *testing.T) {
	srv := startServer(t, nil)
	cfg := srv.agentConfig(t, srv.token(), newPIDAttestor())
	a := runAgent(t, cfg)
	if err := a.stop(t); err != nil {
		t.Fatalf("agent Run: %v", err)
	}
	lock := filepath.Join(cfg.DataDir, statelock.FileName)
	if err := statelock.Check(lock, "data directory"); err != nil {
		t.Errorf("data directory still locked after Run returned: %v", err)
	}
	if _, err := os.Lstat(cfg.SocketPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stopped agent left its socket (%v)", err)
	}
	runAgent(t, cfg)
}

// A join token given as a file attests the agent, and the file is removed
// once the token is spent.
func TestJoinTokenFile(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	cfg := srv.agentConfig(t, "", newPIDAttestor())
	cfg.JoinTokenFile = filepath.Join(shortDir(t), "join-token")
	mustOK(t, os.WriteFile(cfg.JoinTokenFile, []byte(token+"\n"), 0o600), "writing the token file")
	a := runAgent(t, cfg)
	if got, want := a.SPIFFEID(), agentPath(token); got != want {
		t.Errorf("agent ID = %v, want %v (the token in the file)", got, want)
	}
	if _, err := os.Stat(cfg.JoinTokenFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spent join token file is still there (%v)", err)
	}
}

func TestJoinTokenFileRefusals(t *testing.T) {
	srv := startServer(t, nil)
	base := srv.agentConfig(t, "", newPIDAttestor())
	both := base
	both.JoinToken, both.JoinTokenFile = "tok", "/nonexistent"
	if _, err := agent.New(both); err == nil {
		t.Error("agent.New with a join token and a join token file succeeded, want an error")
	}
	for _, tc := range []struct{ name, content, want string }{
		{"missing", "", "no such file"},
		{"empty", "\n", "holds no token"},
		{"two words", "a b\n", "holds no token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := srv.agentConfig(t, "", newPIDAttestor())
			cfg.JoinTokenFile = filepath.Join(shortDir(t), "join-token")
			if tc.name != "missing" {
				mustOK(t, os.WriteFile(cfg.JoinTokenFile, []byte(tc.content), 0o600), "writing")
			}
			a, err := agent.New(cfg)
			mustOK(t, err, "agent.New")
			ctx, cancel := contextFor(t)
			defer cancel()
			if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run with a %s token file = %v, want an error containing %q", tc.name, err, tc.want)
			}
		})
	}
	// A token the server refuses leaves the file for the operator to see.
	cfg := srv.agentConfig(t, "", newPIDAttestor())
	cfg.JoinTokenFile = filepath.Join(shortDir(t), "join-token")
	mustOK(t, os.WriteFile(cfg.JoinTokenFile, []byte("not-a-token"), 0o600), "writing")
	a, err := agent.New(cfg)
	mustOK(t, err, "agent.New")
	ctx, cancel := contextFor(t)
	defer cancel()
	if err := a.Run(ctx); err == nil {
		t.Error("Run with an unknown token succeeded")
	}
	if _, err := os.Stat(cfg.JoinTokenFile); err != nil {
		t.Errorf("the unspent token file was removed (%v)", err)
	}
}

// contextFor bounds one Run in these tests.
func contextFor(_ *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
