// Package statelock gives one process at a time a directory it keeps state
// in: a server's state directory, an agent's data directory, the tree `arbor
// up` runs from a topology file. The owner holds an exclusive flock(2) on a
// lock file in the directory, with its PID written into it, until it exits;
// a second process is refused at once with the holder's PID. The kernel
// drops the lock with the process, so a crash (SIGKILL included) never
// leaves a stale lock behind.
package statelock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FileName is the lock file of a server's state directory and of an
// agent's data directory.
const FileName = "arbor.lock"

// ErrInUse is what every refusal of this package wraps: another live
// process owns the directory.
var ErrInUse = errors.New("statelock: in use by another process")

// HeldError is a lock another process holds.
type HeldError struct {
	// What is what the lock guards, as the message names it ("state
	// directory /var/lib/arbor/root").
	What string
	// Path is the lock file.
	Path string
	// PID is the holder's process ID; zero when it could not be read.
	PID int
	// Holder is what the holder said it is ("server root"), or "".
	Holder string
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "pid " + strconv.Itoa(e.PID)
	}
	if e.Holder != "" {
		return fmt.Sprintf("%s is in use by %s (%s; lock %s); stop it first", e.What, who, e.Holder, e.Path)
	}
	return fmt.Sprintf("%s is in use by %s (lock %s); stop it first", e.What, who, e.Path)
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *HeldError) Unwrap() error { return ErrInUse }

// Lock is a held lock. Its zero value and nil hold nothing.
type Lock struct {
	mu sync.Mutex
	f  *os.File
}

// Acquire takes the lock file at path for this process without waiting,
// creating the file (and its directory, mode 0700) when missing, and writes
// the PID and self (what this process is, "" for nothing) into it for the
// message of whoever tries next. what names what the lock guards in that
// message. A lock held by another process is a *HeldError. The lock file
// stays when the lock is released: removing it would let two processes
// lock two different files of the same name.
func Acquire(path, what, self string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("statelock: %w", err)
	}
	// Never O_TRUNC: the file may be a holder's, whose PID the refusal reads.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("statelock: %w", err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, held(f, path, what)
		}
		return nil, fmt.Errorf("statelock: locking %s: %w", path, err)
	}
	content := strconv.Itoa(os.Getpid()) + "\n"
	if self = oneLine(self); self != "" {
		content += self + "\n"
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(content), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("statelock: writing %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Check reports, without taking it, whether another process holds the lock
// file at path: nil when it is free (or does not exist), a *HeldError when
// it is held. It writes nothing.
func Check(path, what string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("statelock: %w", err)
	}
	defer f.Close()
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return held(f, path, what)
		}
		return fmt.Errorf("statelock: locking %s: %w", path, err)
	}
	return nil // closing f unlocks it
}

// Release gives the lock up; later calls do nothing. The PID is cleared
// first, while the lock is still held, so the file never names a process
// that no longer holds it.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	f.Truncate(0)
	return f.Close()
}

// held reads the holder's PID and self from f. The holder writes them just
// after taking the lock, so an empty file is read again for a moment.
func held(f *os.File, path, what string) *HeldError {
	e := &HeldError{What: what, Path: path}
	for range 20 {
		b, err := io.ReadAll(io.NewSectionReader(f, 0, 4096))
		if err == nil && len(b) > 0 {
			pid, rest, _ := strings.Cut(string(b), "\n")
			if n, err := strconv.Atoi(strings.TrimSpace(pid)); err == nil && n > 0 {
				e.PID = n
				e.Holder = strings.TrimSpace(rest)
				return e
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return e
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
