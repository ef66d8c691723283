package svidcli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reload tells the target's workload that its files changed: the reload
// command first, then the signal.
func (t *Target) reload(ctx context.Context, env []string) error {
	if t.ReloadCommand != "" {
		if err := runReloadCommand(ctx, t.ReloadCommand, t.ReloadTimeout, env); err != nil {
			return err
		}
	}
	if t.ReloadSignal != 0 {
		if err := t.sendSignal(); err != nil {
			return err
		}
	}
	return nil
}

// runReloadCommand runs command with /bin/sh -c in its own process group,
// killed with the group when timeout passes.
func runReloadCommand(ctx context.Context, command string, timeout time.Duration, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), env...)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := err.Error()
	if ctx.Err() == context.DeadlineExceeded {
		msg = fmt.Sprintf("killed after %v", timeout)
	}
	if last := out.lastLine(); last != "" {
		msg += ": " + last
	}
	return fmt.Errorf("reload command %q failed: %s", command, msg)
}

// sendSignal sends ReloadSignal to PID, or to the pid read from PIDFile.
func (t *Target) sendSignal() error {
	pid, from := t.PID, ""
	if t.PIDFile != "" {
		var err error
		if pid, err = readPIDFile(t.PIDFile); errors.Is(err, os.ErrNotExist) {
			return errNotRunning
		} else if err != nil {
			return err
		}
		from = " (from " + t.PIDFile + ")"
	}
	if err := syscall.Kill(pid, t.ReloadSignal); err != nil {
		return fmt.Errorf("send %s to pid %d%s: %v", signalName(t.ReloadSignal), pid, from, err)
	}
	return nil
}

// readPIDFile reads the process id on the first line of path (nginx's pid
// file, PostgreSQL's postmaster.pid, ...). Zero and negative values are
// refused: kill(2) would signal a whole process group.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: first line %q is not a process id", path, strings.TrimSpace(line))
	}
	return pid, nil
}

func signalName(s syscall.Signal) string {
	for name, sig := range signalNames {
		if sig == s {
			return "SIG" + name
		}
	}
	return "signal " + strconv.Itoa(int(s))
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	const keep = 4096
	t.b = append(t.b, p...)
	if len(t.b) > keep {
		t.b = t.b[len(t.b)-keep:]
	}
	return len(p), nil
}

func (t *tailBuffer) lastLine() string {
	lines := bytes.Split(bytes.TrimSpace(t.b), []byte("\n"))
	return oneLine(string(lines[len(lines)-1]))
}

var errNoSVIDYet = errors.New("waiting for the first X509-SVID from the Workload API")

// errNotRunning means the pid file does not exist: the program has not
// started (or has stopped), and it reads the new files when it starts, so
// there is nothing to signal. It is logged, not a failure.
var errNotRunning = errors.New("the pid file does not exist: nothing to signal until the program runs")
