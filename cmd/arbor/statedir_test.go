package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/statelock"
)

// State left where the former layout kept it (.arbor/NAME beside the file)
// is no longer found: arbor server says where it is and how to move it, and
// moves nothing.
func TestWarnOldState(t *testing.T) {
	path := examplesIn(t, "quickstart.hcl")[0]
	dir := filepath.Dir(path)
	old := filepath.Join(dir, ".arbor", "root")
	now := filepath.Join(dir, ".arbor", "quickstart", "root")
	mkdir := func(t *testing.T, p string) {
		t.Helper()
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	warnings := func(t *testing.T) string {
		t.Helper()
		var b strings.Builder
		warnOldState(&b, mustParseFile(t, path))
		return b.String()
	}

	mkdir(t, filepath.Join(old, "logs"))
	if got := warnings(t); got != "" {
		t.Errorf("old directory without a CA or datastore: warnings %q, want none", got)
	}

	mkdir(t, filepath.Join(old, "ca"))
	got := warnings(t)
	if strings.Count(got, "\n") != 1 {
		t.Fatalf("warnings = %q, want one line", got)
	}
	for _, want := range []string{`server "root"`, "its state is now kept in " + now, old + " holds state of the former layout",
		"mkdir -p " + now + " && mv " + old + "/* " + now + "/"} {
		if !strings.Contains(got, want) {
			t.Errorf("warning %q does not say %q", got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(old, "ca")); err != nil {
		t.Errorf("the old state was touched: %v", err)
	}

	// arbor server prints it before it starts; here it is refused right
	// after, the new state directory being held.
	mkdir(t, now)
	l, err := statelock.Acquire(filepath.Join(now, statelock.FileName), "state directory "+now, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := newRootCommand()
	var stdout, stderr strings.Builder
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"server", "--topology", path, "--node", "root"})
	err = cmd.ExecuteContext(ctx)
	l.Release()
	if !errors.Is(err, statelock.ErrInUse) {
		t.Fatalf("arbor server on a held state directory = %v, want it refused", err)
	}
	if !strings.Contains(stderr.String(), "mv "+old+"/* "+now+"/") || strings.Count(stderr.String(), "warning") != 1 {
		t.Errorf("arbor server stderr = %q, want the one warning", stderr.String())
	}

	mkdir(t, filepath.Join(now, "ca"))
	if got := warnings(t); got != "" {
		t.Errorf("new state directory holding state: warnings %q, want none", got)
	}
}

// A server whose state_dir the file sets is never warned about.
func TestWarnOldStateNotForStateDirSet(t *testing.T) {
	path := examplesIn(t, "single-server.hcl")[0]
	if err := os.MkdirAll(filepath.Join(filepath.Dir(path), ".arbor", "root", "ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	f := mustParseFile(t, path)
	// single-server.hcl sets state_dir to its default: warned, the
	// directory being the default one.
	var b strings.Builder
	warnOldState(&b, f)
	if b.Len() == 0 {
		t.Errorf("single-server.hcl (state_dir = its default): no warning")
	}
	f.Servers[0].StateDir = filepath.Join(filepath.Dir(path), "elsewhere")
	b.Reset()
	warnOldState(&b, f)
	if b.Len() != 0 {
		t.Errorf("state_dir elsewhere: warning %q, want none", b.String())
	}
}
