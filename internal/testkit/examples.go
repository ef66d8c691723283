package testkit

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LockExamplePorts is for a test that runs an example topology with its
// fixed loopback ports (examples/quickstart.hcl listens on 127.0.0.1:8081
// and more): it takes an exclusive lock, $TMPDIR/arbor-examples-ports.lock,
// that every such test of this machine takes, then waits until the ports
// the file at path names are free, for timeout at most. It returns the
// func that releases the lock (safe to call twice). go test runs packages in
// parallel, and two examples on the same ports would fail each other.
func LockExamplePorts(t testing.TB, path string, timeout time.Duration) (release func()) {
	t.Helper()
	lock := filepath.Join(os.TempDir(), "arbor-examples-ports.lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("%s still locked after %v by another test running an example", lock, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var once sync.Once
	release = func() { once.Do(func() { f.Close() }) }
	src, err := os.ReadFile(path)
	if err != nil {
		release()
		t.Fatal(err)
	}
	for _, addr := range regexp.MustCompile(`"(127\.0\.0\.1:\d+)"`).FindAllStringSubmatch(string(src), -1) {
		for {
			l, err := net.Listen("tcp", addr[1])
			if err == nil {
				l.Close()
				break
			}
			if time.Now().After(deadline) {
				release()
				t.Fatalf("%s (in %s) still in use after %v: %v", addr[1], path, timeout, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return release
}
