package statelock_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/statelock"
)

// helperEnv makes the test binary a process that holds a lock: it takes
// the lock file named by the variable, prints "locked" and waits to be
// killed.
const helperEnv = "STATELOCK_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		if _, err := statelock.Acquire(path, "test directory", "helper"); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("locked")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSecondAcquireRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, statelock.FileName)
	first, err := statelock.Acquire(path, "state directory "+dir, "server root")
	if err != nil {
		t.Fatalf("Acquire(%q) = %v, want the lock", path, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Acquire created %s with %v (%v), want mode 0700", dir, fi.Mode(), err)
	}
	written, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d\nserver root\n", os.Getpid()); string(written) != want {
		t.Errorf("lock file holds %q, want %q", written, want)
	}

	// flock(2) locks belong to an open file, so a second open in the same
	// process is refused like another process would be.
	_, err = statelock.Acquire(path, "state directory "+dir, "server other")
	var held *statelock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire = %v, want a *HeldError", err)
	}
	if !errors.Is(err, statelock.ErrInUse) {
		t.Errorf("errors.Is(%v, ErrInUse) = false", err)
	}
	if held.PID != os.Getpid() || held.Path != path || held.Holder != "server root" {
		t.Errorf("HeldError = %+v, want pid %d, path %s, holder %q", held, os.Getpid(), path, "server root")
	}
	want := fmt.Sprintf("state directory %s is in use by pid %d (server root; lock %s); stop it first", dir, os.Getpid(), path)
	if err.Error() != want {
		t.Errorf("message\n%s\nwant\n%s", err, want)
	}
	if again, _ := os.ReadFile(path); string(again) != string(written) {
		t.Errorf("the refused Acquire changed the lock file to %q, want %q", again, written)
	}
	if err := statelock.Check(path, "state directory "+dir); !errors.As(err, &held) || held.PID != os.Getpid() {
		t.Errorf("Check of a held lock = %v, want a *HeldError with pid %d", err, os.Getpid())
	}

	if err := first.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := first.Release(); err != nil {
		t.Errorf("second Release = %v, want nil", err)
	}
	if err := statelock.Check(path, "state directory "+dir); err != nil {
		t.Errorf("Check after Release = %v, want nil", err)
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Errorf("released lock file holds %q, want it empty", b)
	}
	next, err := statelock.Acquire(path, "state directory "+dir, "")
	if err != nil {
		t.Fatalf("Acquire after Release = %v, want the lock", err)
	}
	defer next.Release()
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock file without self holds %q, want the PID alone", b)
	}
}

func TestHeldErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  statelock.HeldError
		want string
	}{
		{statelock.HeldError{What: "data directory d", Path: "d/arbor.lock", PID: 1234},
			"data directory d is in use by pid 1234 (lock d/arbor.lock); stop it first"},
		{statelock.HeldError{What: "data directory d", Path: "d/arbor.lock"},
			"data directory d is in use by another process (lock d/arbor.lock); stop it first"},
		{statelock.HeldError{What: "state directory s", Path: "s/up.lock", PID: 7, Holder: "arbor up a.hcl"},
			"state directory s is in use by pid 7 (arbor up a.hcl; lock s/up.lock); stop it first"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%+v.Error() = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestCheckMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none", statelock.FileName)
	if err := statelock.Check(path, "state directory none"); err != nil {
		t.Errorf("Check(%q) = %v, want nil", path, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check created %s (%v), want nothing written", filepath.Dir(path), err)
	}
	var l *statelock.Lock
	if err := l.Release(); err != nil {
		t.Errorf("nil Lock Release = %v, want nil", err)
	}
}

// TestKilledHolderReleases: a holder killed with SIGKILL runs no cleanup,
// and the kernel still drops its lock.
func TestKilledHolderReleases(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), statelock.FileName)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "locked" {
			t.Fatalf("helper printed %q, want locked", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not take the lock within 30s")
	}

	_, err = statelock.Acquire(path, "test directory", "")
	var held *statelock.HeldError
	if !errors.As(err, &held) || held.PID != cmd.Process.Pid || held.Holder != "helper" {
		t.Fatalf("Acquire while the helper holds it = %v, want a *HeldError naming pid %d (helper)", err, cmd.Process.Pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	l, err := statelock.Acquire(path, "test directory", "")
	if err != nil {
		t.Fatalf("Acquire after the holder was killed = %v, want the lock", err)
	}
	l.Release()
}
