package launcher

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborid/arbor/topology"
)

// A log past its limit is copied to NAME.log.1 and emptied; the child's
// O_APPEND descriptor then writes at the start of the emptied file.
func TestRotateLogKeepsSizeBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	child, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	old := strings.Repeat("old line\n", 10)
	child.WriteString(old)
	if err := rotateLog(path, int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(len(old)) {
		t.Fatalf("a log at its limit was rotated (size %d)", fi.Size())
	}
	child.WriteString("one more\n")
	if err := rotateLog(path, int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path + ".1"); string(b) != old+"one more\n" {
		t.Errorf("server.log.1 holds %q, want the whole rotated log", b)
	}
	child.WriteString("after\n")
	if b, _ := os.ReadFile(path); string(b) != "after\n" {
		t.Errorf("server.log after rotation holds %q, want only what the child wrote since", b)
	}
}

// logTree is a file whose servers' logs directories are under dir.
func logTree(t *testing.T, dir string) *topology.File {
	t.Helper()
	return tree(t, filepath.Join(dir, "tree.hcl"), "example.org", 9301, "root=", "leaf-a=root", "leaf-b=root")
}

func writeLog(t *testing.T, f *topology.File, node, file, text string) {
	t.Helper()
	s, err := f.Server(node)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(logDir(s), 0o700); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(filepath.Join(logDir(s), file), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func TestLogsMergedInTimeOrder(t *testing.T) {
	f := logTree(t, t.TempDir())
	writeLog(t, f, "root", "server.log", "time=2026-01-01T10:00:00.000Z msg=a\ntime=2026-01-01T10:00:03.000Z msg=d\n")
	writeLog(t, f, "leaf-a", "server.log.1", "time=2026-01-01T09:59:59.000Z msg=rotated\n")
	writeLog(t, f, "leaf-a", "server.log", "time=2026-01-01T10:00:01.000Z msg=b\npanic: no time\n\tstack\n")
	writeLog(t, f, "leaf-a", "leaf-a-agent.log", `{"time":"2026-01-01T10:00:02Z","msg":"c"}`+"\n")
	writeLog(t, f, "leaf-b", "demo.log", "time=2026-01-01T10:00:04.000Z msg=e\n")
	tests := []struct {
		nodes []string
		tail  int
		want  string
	}{
		{nil, 0, `leaf-a/server | time=2026-01-01T09:59:59.000Z msg=rotated
root/server   | time=2026-01-01T10:00:00.000Z msg=a
leaf-a/server | time=2026-01-01T10:00:01.000Z msg=b
leaf-a/server | panic: no time
leaf-a/server | 	stack
leaf-a/agent  | {"time":"2026-01-01T10:00:02Z","msg":"c"}
root/server   | time=2026-01-01T10:00:03.000Z msg=d
leaf-b/demo   | time=2026-01-01T10:00:04.000Z msg=e
`},
		{[]string{"leaf-b", "root"}, 0, `root/server | time=2026-01-01T10:00:00.000Z msg=a
root/server | time=2026-01-01T10:00:03.000Z msg=d
leaf-b/demo | time=2026-01-01T10:00:04.000Z msg=e
`},
		{nil, 2, `root/server   | time=2026-01-01T10:00:03.000Z msg=d
leaf-b/demo   | time=2026-01-01T10:00:04.000Z msg=e
`},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := Logs(t.Context(), f, tt.nodes, LogsOptions{Out: &out, Tail: tt.tail}); err != nil {
			t.Fatalf("Logs(%v, tail %d): %v", tt.nodes, tt.tail, err)
		}
		if out.String() != tt.want {
			t.Errorf("Logs(%v, tail %d) printed\n%s\nwant\n%s", tt.nodes, tt.tail, out.String(), tt.want)
		}
	}
}

func TestLogsRefusals(t *testing.T) {
	f := logTree(t, t.TempDir())
	if err := Logs(t.Context(), f, nil, LogsOptions{Out: &bytes.Buffer{}}); !errors.Is(err, ErrNoLogs) {
		t.Errorf("Logs of a tree never run = %v, want ErrNoLogs", err)
	}
	if err := Logs(t.Context(), f, []string{"nope"}, LogsOptions{Out: &bytes.Buffer{}}); !errors.Is(err, topology.ErrUnknownServer) {
		t.Errorf("Logs of an unknown node = %v, want topology.ErrUnknownServer", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Follow prints appended lines, a half-written line once it ends, a log
// created later, and a rotated log's new lines.
func TestLogsFollow(t *testing.T) {
	f := logTree(t, t.TempDir())
	writeLog(t, f, "root", "server.log", "time=2026-01-01T10:00:00.000Z msg=first\n")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- Logs(ctx, f, nil, LogsOptions{Out: &out, Follow: true, PollEvery: 10 * time.Millisecond})
	}()
	waitFor := func(want string) {
		t.Helper()
		for !strings.Contains(out.String(), want) {
			select {
			case err := <-done:
				t.Fatalf("Logs returned %v before printing %q; printed:\n%s", err, want, out.String())
			case <-ctx.Done():
				t.Fatalf("Logs did not print %q; printed:\n%s", want, out.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitFor("root/server | time=2026-01-01T10:00:00.000Z msg=first\n")
	writeLog(t, f, "root", "server.log", "time=2026-01-01T10:00:01.000Z msg=se")
	writeLog(t, f, "root", "server.log", "cond\n")
	waitFor("root/server | time=2026-01-01T10:00:01.000Z msg=second\n")
	writeLog(t, f, "leaf-b", "demo.log", "time=2026-01-01T10:00:02.000Z msg=new file\n")
	waitFor("leaf-b/demo | time=2026-01-01T10:00:02.000Z msg=new file\n")
	s, _ := f.Server("root")
	if err := rotateLog(filepath.Join(logDir(s), "server.log"), 1); err != nil {
		t.Fatal(err)
	}
	writeLog(t, f, "root", "server.log", "time=2026-01-01T10:00:03.000Z msg=rotated\n")
	waitFor("msg=rotated\n")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Logs --follow ended with %v, want nil at the end of its context", err)
	}
	if n := strings.Count(out.String(), "msg=first"); n != 1 {
		t.Errorf("the first line printed %d times, want once:\n%s", n, out.String())
	}
}
