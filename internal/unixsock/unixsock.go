// Package unixsock binds the Unix sockets arbor's processes serve — a
// server's admin socket, an agent's Workload API socket, the control socket
// of `arbor up` — without taking one from another process: a path that
// answers is refused, a stale file nobody answers on is replaced, and on
// close the file is removed only while it is still the socket this process
// created.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrInUse is what a refusal to bind wraps: another process serves the path.
var ErrInUse = errors.New("unixsock: socket in use by another process")

// InUseError is a socket path another process answers on.
type InUseError struct {
	Path string
	// PID is the process that serves it, when the system says (Linux); zero
	// otherwise.
	PID int
}

func (e *InUseError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("socket %s is served by another process (pid %d); stop it first", e.Path, e.PID)
	}
	return fmt.Sprintf("socket %s is served by another process; stop it first", e.Path)
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Unwrap() error { return ErrInUse }

// dialTimeout bounds the probe of an existing socket file. A Unix connect
// does not wait for the other side's accept, so this is only reached by a
// listener whose backlog is full, which is a live one.
const dialTimeout = time.Second

// Check reports whether path is free to bind: nil when nothing is there or
// only a stale socket file nobody answers on (Listen replaces it), an
// *InUseError when a process answers on it, and an error when it is
// something other than a socket.
func Check(path string) error {
	_, err := check(path)
	return err
}

// check is Check that also says whether a stale file is to be removed.
func check(path string) (stale bool, _ error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("unixsock: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return false, fmt.Errorf("unixsock: %s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err == nil {
		pid := peerPID(c)
		c.Close()
		return false, &InUseError{Path: path, PID: pid}
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return true, nil // a socket file whose process is gone
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, os.ErrDeadlineExceeded):
		return false, &InUseError{Path: path} // listening, with a full backlog
	case errors.Is(err, os.ErrNotExist):
		return false, nil // removed since the Lstat
	}
	return false, fmt.Errorf("unixsock: probing %s: %w", path, err)
}

// Listener is a Unix socket this process bound. Close removes the socket
// file only if it is still the one Listen created: another process that
// replaced it keeps its own.
type Listener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
	once     sync.Once
	closeErr error
}

// Listen binds a stream socket at path, creating its directory (mode 0700)
// when missing. It refuses, with an *InUseError, a path another process
// answers on, and replaces a stale socket file that nothing answers on.
func Listen(path string) (*Listener, error) {
	stale, err := check(path)
	if err != nil {
		return nil, err
	}
	if stale {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("unixsock: removing stale socket %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("unixsock: %w", err)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Someone bound it between the check and here.
			return nil, &InUseError{Path: path}
		}
		return nil, fmt.Errorf("unixsock: %w", err)
	}
	// net.UnixListener.Close unlinks the path whatever is there by then;
	// Close below removes it only when it is still ours.
	ul.SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("unixsock: %w", err)
	}
	dev, ino, _ := fileID(fi)
	return &Listener{UnixListener: ul, path: path, dev: dev, ino: ino}, nil
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket file if it is still the one
// Listen created. The file is removed before the socket is closed: while it
// is bound its inode cannot be reused, so a file with the same device and
// inode numbers is this one. Later calls return the first call's result.
func (l *Listener) Close() error {
	l.once.Do(func() {
		if fi, err := os.Lstat(l.path); err == nil {
			if dev, ino, ok := fileID(fi); ok && dev == l.dev && ino == l.ino {
				os.Remove(l.path)
			}
		}
		l.closeErr = l.UnixListener.Close()
	})
	return l.closeErr
}

func fileID(fi os.FileInfo) (dev, ino uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Dev), uint64(st.Ino), true
}
