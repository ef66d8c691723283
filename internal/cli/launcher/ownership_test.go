package launcher

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/topology"
)

// A second lockFiles of the same file is refused with the holder's PID and
// what it runs; released, the file can be run again.
func TestLockFilesRefusesSecond(t *testing.T) {
	dir := t.TempDir()
	org := tree(t, filepath.Join(dir, "org.hcl"), "example.org", 9001, "root=", "leaf=root")
	partner := tree(t, filepath.Join(dir, "p", "partner.hcl"), "partner.example", 9101, "root=")
	release, err := lockFiles([]*topology.File{org, partner})
	if err != nil {
		t.Fatalf("lockFiles: %v", err)
	}
	_, err = lockFiles([]*topology.File{partner})
	var held *statelock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second lockFiles = %v, want a *statelock.HeldError", err)
	}
	sock, _ := ControlSocket(partner)
	wantLock := filepath.Join(filepath.Dir(sock), upLockName)
	if held.PID != os.Getpid() || held.Path != wantLock || held.Holder != "arbor up "+org.Path+" "+partner.Path {
		t.Errorf("HeldError = %+v, want pid %d, lock %s, holder naming both files", held, os.Getpid(), wantLock)
	}
	if !strings.HasPrefix(err.Error(), "topology "+partner.Path+" is in use by pid ") {
		t.Errorf("message %q, want it to start with the topology file", err)
	}
	release()
	again, err := lockFiles([]*topology.File{partner})
	if err != nil {
		t.Fatalf("lockFiles after release = %v", err)
	}
	again()
}

// Up of a file another arbor up runs refuses before it prints, starts or
// writes anything.
func TestUpRefusedWhileFileRuns(t *testing.T) {
	dir := t.TempDir()
	f := tree(t, filepath.Join(dir, "tree.hcl"), "example.org", 9201, "root=", "leaf=root")
	release, err := lockFiles([]*topology.File{f})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	entries := func() []string {
		var names []string
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error {
			names = append(names, p)
			return nil
		})
		return names
	}
	before := entries()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	err = Up(ctx, []*topology.File{f}, Options{Out: &out, Exe: filepath.Join(dir, "no-such-arbor")})
	if !errors.Is(err, statelock.ErrInUse) {
		t.Fatalf("Up of a running file = %v, want statelock.ErrInUse", err)
	}
	if out.Len() != 0 {
		t.Errorf("the refused Up printed %q, want nothing", out.String())
	}
	if after := entries(); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the refused Up changed the tree's files:\nbefore %v\nafter  %v", before, after)
	}
}

// writeSecret replaces a file that others could read with a new one of mode
// 0600.
func TestWriteSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), joinTokenFile)
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSecret(path, []byte("tok\n")); err != nil {
		t.Fatalf("writeSecret: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "tok\n" {
		t.Errorf("token file holds %q, want %q", b, "tok\n")
	}
}
