// Package benchproc starts and stops the server processes the side-by-side
// benchmark commands measure (arbor and a real spire-server): building the
// binaries, free loopback ports, the wait until a server serves its bundle
// on its admin socket, and a stop that never leaves a process behind.
package benchproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/internal/testkit/freeport"
)

// Process is a running server.
type Process struct {
	// AdminSock is its admin Unix socket, Addr its agent API (host:port),
	// Log the file its output goes to.
	AdminSock, Addr, Log string
	// Cleanup runs after the process stopped, last first.
	Cleanup []func()

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start runs bin with args (and env added to this process's environment),
// its output in logPath, and waits until it serves (WaitReady, timeout). On
// error nothing is left running.
func Start(ctx context.Context, bin string, args, env []string, logPath, adminSock, addr string, timeout time.Duration, cleanup ...func()) (*Process, error) {
	p := &Process{AdminSock: adminSock, Addr: addr, Log: logPath, Cleanup: cleanup, done: make(chan struct{})}
	logFile, err := os.Create(logPath)
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		p.cmd = nil
		p.Stop()
		return nil, fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	if err := p.WaitReady(ctx, timeout); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s did not become ready: %w (log: %s)", filepath.Base(bin), err, logPath)
	}
	return p, nil
}

// FreePort returns a loopback TCP port nothing listens on now, below the
// kernel's ephemeral range (see freeport), so a process restarted on it
// finds it free.
func FreePort() (int, error) { return freeport.Port() }

// WaitReady polls until the admin socket serves a bundle with an X.509
// authority and the agent port accepts connections.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration) error {
	conn, err := grpc.NewClient("unix://"+p.AdminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := bundlev1.NewBundleClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.waitErr)
		default:
		}
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			b, err := client.GetBundle(cctx, &bundlev1.GetBundleRequest{})
			if err != nil {
				return err
			}
			if len(b.X509Authorities) == 0 {
				return errors.New("bundle has no X.509 authority yet")
			}
			c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Bundle returns the server's own bundle, from its admin socket.
func (p *Process) Bundle(ctx context.Context) (*types.Bundle, error) {
	conn, err := grpc.NewClient("unix://"+p.AdminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after 20s, and runs Cleanup.
func (p *Process) Stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	for i := len(p.Cleanup) - 1; i >= 0; i-- {
		p.Cleanup[i]()
	}
	p.Cleanup = nil
}

// BuildArbor builds cmd/arbor from the repository into dir.
func BuildArbor(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "arbor")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/arbor")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/arbor: %v\n%s", err, out)
	}
	return bin, nil
}

// BuildSpire runs test/spirepeer/build.sh, which prints the directory of the
// SPIRE v1.13.3 binaries (built once and cached).
func BuildSpire(ctx context.Context, repo string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", "test/spirepeer/build.sh")
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("test/spirepeer/build.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// RepoRoot walks up from the working directory to the directory of go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the arbor repository (no go.mod above the working directory)")
		}
		dir = parent
	}
}
