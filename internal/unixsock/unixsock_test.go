package unixsock_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/unixsock"
)

// sockDir is a short directory for sockets (108-byte limit).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "arbor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve accepts and closes connections on l until it is closed.
func serve(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func answers(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Ino)
}

// staleSocket leaves a socket file at path that nothing listens on, as a
// process killed while serving does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if err := answers(path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket %s answers %v, want connection refused", path, err)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "sub", "api.sock")
	first, err := unixsock.Listen(path)
	if err != nil {
		t.Fatalf("Listen(%q) = %v", path, err)
	}
	defer first.Close()
	serve(first)
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Listen created %s with %v (%v), want mode 0700", filepath.Dir(path), fi.Mode(), err)
	}
	ino := inode(t, path)

	for _, f := range []struct {
		name string
		call func() error
	}{
		{"Listen", func() error {
			l, err := unixsock.Listen(path)
			if err == nil {
				l.Close()
			}
			return err
		}},
		{"Check", func() error { return unixsock.Check(path) }},
	} {
		err := f.call()
		var inUse *unixsock.InUseError
		if !errors.As(err, &inUse) || !errors.Is(err, unixsock.ErrInUse) || inUse.Path != path {
			t.Fatalf("%s of a served socket = %v, want an *InUseError for %s", f.name, err, path)
		}
		if runtime.GOOS == "linux" && inUse.PID != os.Getpid() {
			t.Errorf("%s: InUseError.PID = %d, want %d (this process serves it)", f.name, inUse.PID, os.Getpid())
		}
	}
	// The first one is unharmed: same file, still answering.
	if got := inode(t, path); got != ino {
		t.Errorf("socket inode %d after the refusals, want %d (the first listener's)", got, ino)
	}
	if err := answers(path); err != nil {
		t.Errorf("the first listener no longer answers: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s (%v), want its own socket removed", path, err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("second Close = %v, want the first's result", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	staleSocket(t, path)
	if err := unixsock.Check(path); err != nil {
		t.Errorf("Check of a stale socket = %v, want nil", err)
	}
	l, err := unixsock.Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket = %v, want it replaced", err)
	}
	defer l.Close()
	serve(l)
	if err := answers(path); err != nil {
		t.Errorf("the new listener does not answer: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := unixsock.Listen(path)
	if err == nil {
		l.Close()
	}
	if err == nil || errors.Is(err, unixsock.ErrInUse) {
		t.Fatalf("Listen over a regular file = %v, want a refusal that is not ErrInUse", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Errorf("the regular file is now %q (%v), want it untouched", b, err)
	}
}

// TestCloseKeepsAnotherProcessSocket: a socket that replaced ours (here
// bound directly, as a process not using this package would) stays when we
// close.
func TestCloseKeepsAnotherProcessSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	ours, err := unixsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	theirs, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Close()
	serve(theirs)
	ino := inode(t, path)
	if err := ours.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if got := inode(t, path); got != ino {
		t.Errorf("socket inode %d after our Close, want %d (theirs)", got, ino)
	}
	if err := answers(path); err != nil {
		t.Errorf("their socket no longer answers after our Close: %v", err)
	}
}
