package doctest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/testkit"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// Time bounds. The whole package is meant to take well under a minute.
const (
	blockTimeout = 60 * time.Second  // one block, all its commands
	treeTimeout  = 120 * time.Second // arbor up until it prints ready
	stopTimeout  = 15 * time.Second  // arbor up after SIGINT
)

// docFiles are the documents whose shell blocks are checked.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "examples/README.md"}
	more, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range more {
		rel, _ := filepath.Rel(repoRoot, f)
		files = append(files, rel)
	}
	sort.Strings(files[2:])
	return files
}

// TestDocs runs every marked shell block of the documents and fails on a
// block without a marker, a command that exits with another status than the
// marker says, and, with `output`, printed output that differs from the
// document's.
func TestDocs(t *testing.T) {
	var blocks []block
	for _, f := range docFiles(t) {
		text, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		bs, errs := parseDoc(f, string(text))
		for _, err := range errs {
			t.Error(err)
		}
		blocks = append(blocks, bs...)
	}
	// The tree blocks run last, grouped by topology file, so each tree is
	// started once and stopped before the next (the examples share ports).
	var order []string
	for _, b := range blocks {
		if b.marker.kind == kindTree && !contains(order, b.marker.arg) {
			order = append(order, b.marker.arg)
		}
	}
	rank := func(b block) int {
		if b.marker.kind != kindTree {
			return -1
		}
		return indexOf(order, b.marker.arg)
	}
	sort.SliceStable(blocks, func(i, j int) bool { return rank(blocks[i]) < rank(blocks[j]) })
	h := newHarness(t)
	counts := map[kind]int{}
	for _, b := range blocks {
		counts[b.marker.kind]++
		t.Run(strings.ReplaceAll(b.String(), "/", "_"), func(t *testing.T) {
			switch b.marker.kind {
			case kindSkip:
				// Not run, and not a skipped Go test: the marker's reason
				// is the documented decision.
				t.Logf("not run: %s", b.marker.arg)
			case kindSynopsis:
				h.checkSynopsis(t, b)
			case kindRun:
				h.runBlock(t, b, h.workCopy(t))
			case kindTree:
				tr := h.tree(t, b.marker.arg)
				h.runBlock(t, b, tr.dir)
			}
		})
	}
	t.Logf("%d shell blocks: %d run, %d against a running tree, %d synopses checked, %d not run (skip)",
		len(blocks), counts[kindRun], counts[kindTree], counts[kindSynopsis], counts[kindSkip])
}

// A harness holds what the blocks share: the arbor binary, built once, and
// the trees started for tree blocks.
type harness struct {
	bin   string // the directory holding the arbor binary, first on PATH
	trees map[string]*tree
	help  map[string]helpResult
}

type helpResult struct {
	out string
	err error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	bin := shortDir(t, "adb")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, "arbor"), "./cmd/arbor")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/arbor: %v\n%s", err, out)
	}
	h := &harness{bin: bin, trees: map[string]*tree{}, help: map[string]helpResult{}}
	t.Cleanup(func() {
		for _, tr := range h.trees {
			tr.stop(t)
		}
	})
	return h
}

// shortDir is a temporary directory with a short path, for Unix sockets
// (108 bytes at most), removed at cleanup.
func shortDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// workCopy is a fresh directory standing for the repository root: a copy of
// examples/ (without any state a run left in examples/.arbor), so a command
// that writes state writes it there.
func (h *harness) workCopy(t testing.TB) string {
	t.Helper()
	dir := shortDir(t, "adw")
	if err := copyExamples(filepath.Join(repoRoot, "examples"), filepath.Join(dir, "examples")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyExamples(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && d.Name() == ".arbor" {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

// env is the commands' environment: arbor first on PATH, a HOME of their
// own, and no arbor or SPIFFE variable of the caller's.
func (h *harness) env(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ARBOR_") || k == "SPIFFE_ENDPOINT_SOCKET" || k == "PATH" || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+h.bin+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+home)
}

// sep ends each command's output in the script runBlock writes; the exit
// status follows it.
const sep = "\x1edoctest-exit"

// A result is what one command printed (stdout and stderr together) and its
// exit status.
type result struct {
	out  []string
	exit int
}

// runBlock runs a block's commands in one shell, in dir, so a variable one
// command sets is seen by the next, and checks each command's exit status
// (0, and the marker's exit N for the last one) and, with `output`, its
// output.
func (h *harness) runBlock(t *testing.T, b block, dir string) {
	t.Helper()
	steps := b.steps()
	if len(steps) == 0 {
		t.Fatalf("%s: no command in the block", b)
	}
	var script strings.Builder
	script.WriteString("exec 2>&1\nset -o pipefail\n")
	for _, s := range steps {
		fmt.Fprintf(&script, "%s\nprintf '\\n%s %%d\\n' $?\n", s.cmd, sep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), blockTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = h.env(dir)
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	results := splitResults(out.String())
	if ctx.Err() != nil {
		next := len(results)
		if next < len(steps) {
			t.Fatalf("%s:%d: %s: did not finish within %v (the block's bound); output so far:\n%s", b.file, steps[next].line, steps[next].cmd, blockTimeout, out.String())
		}
		t.Fatalf("%s: did not finish within %v", b, blockTimeout)
	}
	if err != nil && len(results) < len(steps) {
		t.Fatalf("%s: the shell failed: %v\n%s", b, err, out.String())
	}
	for k, s := range steps {
		if k >= len(results) {
			t.Errorf("%s:%d: %s: the shell ended before it", b.file, s.line, s.cmd)
			break
		}
		r := results[k]
		want := 0
		if k == len(steps)-1 {
			want = b.marker.exit
		}
		if r.exit != want {
			t.Errorf("%s:%d: %s: exit status %d, want %d; it printed:\n%s", b.file, s.line, s.cmd, r.exit, want, strings.Join(r.out, "\n"))
			continue
		}
		if b.marker.output && !matchOutput(s.want, r.out) {
			t.Errorf("%s:%d: %s: output differs from the document's\ndocument:\n%s\ngot:\n%s", b.file, s.line, s.cmd, strings.Join(s.want, "\n"), strings.Join(r.out, "\n"))
		}
	}
}

var sepRE = regexp.MustCompile("\n?" + sep + ` (\d+)\n`)

// splitResults splits the script's output at each separator.
func splitResults(out string) []result {
	var rs []result
	for {
		loc := sepRE.FindStringSubmatchIndex(out)
		if loc == nil {
			return rs
		}
		code, _ := strconv.Atoi(out[loc[2]:loc[3]])
		text := strings.TrimRight(out[:loc[0]], "\n")
		var lines []string
		if text != "" {
			lines = strings.Split(text, "\n")
		}
		rs = append(rs, result{out: lines, exit: code})
		out = out[loc[1]:]
	}
}

// A tree is one `arbor up FILE`, started in a copy of examples/ for the
// first block that needs it and stopped when TestDocs ends.
type tree struct {
	file string
	dir  string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
	lock func() // releases the examples' ports lock
	// stopped is set once stop ran; a stopped tree is not started again.
	stopped bool
}

// tree returns the running tree of file, starting it on first use.
func (h *harness) tree(t *testing.T, file string) *tree {
	t.Helper()
	if tr, ok := h.trees[file]; ok {
		if tr.cmd == nil || tr.stopped {
			t.Fatalf("arbor up %s did not start earlier in this run, or was stopped", file)
		}
		select {
		case err := <-tr.done:
			tr.done <- err
			t.Fatalf("arbor up %s exited (%v):\n%s", file, err, tr.out.String())
		default:
		}
		return tr
	}
	// One tree at a time: the examples listen on the same fixed ports.
	for _, other := range h.trees {
		other.stop(t)
	}
	tr := &tree{file: file, out: &syncBuffer{}, done: make(chan error, 1)}
	h.trees[file] = tr
	// Another test of this machine running an example would make this one
	// fail to bind: take the examples' lock and wait for the ports to be
	// free.
	tr.lock = testkit.LockExamplePorts(t, filepath.Join(repoRoot, file), treeTimeout)
	tr.dir = shortDirNoCleanup(t, "adt")
	if err := copyExamples(filepath.Join(repoRoot, "examples"), filepath.Join(tr.dir, "examples")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join(h.bin, "arbor"), "up", file)
	cmd.Dir = tr.dir
	cmd.Env = h.env(tr.dir)
	cmd.Stdout = tr.out
	cmd.Stderr = tr.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr.cmd = cmd
	go func() { tr.done <- cmd.Wait() }()
	deadline := time.Now().Add(treeTimeout)
	for !strings.Contains(tr.out.String(), "\nready") {
		select {
		case err := <-tr.done:
			tr.done <- err
			t.Fatalf("arbor up %s exited before it was ready (%v):\n%s", file, err, tr.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("arbor up %s not ready within %v:\n%s", file, treeTimeout, tr.out.String())
		}
	}
	t.Logf("arbor up %s: ready in %v", file, time.Since(start).Round(100*time.Millisecond))
	return tr
}

// stop interrupts arbor up as Ctrl-C does and waits for it to stop its
// tree; a tree that does not stop in time is killed with its process group.
func (tr *tree) stop(t testing.TB) {
	if tr.stopped {
		return
	}
	tr.stopped = true
	defer func() {
		if tr.lock != nil {
			tr.lock()
		}
		if tr.dir != "" {
			os.RemoveAll(tr.dir)
		}
	}()
	if tr.cmd == nil {
		return
	}
	_ = tr.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-tr.done:
		if err != nil {
			t.Errorf("arbor up %s: after Ctrl-C: %v\n%s", tr.file, err, tail(tr.out.String(), 20))
		}
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-tr.cmd.Process.Pid, syscall.SIGKILL)
		<-tr.done
		t.Errorf("arbor up %s did not stop within %v of SIGINT:\n%s", tr.file, stopTimeout, tail(tr.out.String(), 20))
	}
}

// shortDirNoCleanup is shortDir for a directory that outlives the subtest
// creating it (the tree's, removed by tree.stop).
func shortDirNoCleanup(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkSynopsis checks each `arbor ...` line of a usage block: the command
// exists (its --help names it) and so does every --flag the line shows.
func (h *harness) checkSynopsis(t *testing.T, b block) {
	t.Helper()
	// An indented line continues the usage line above it.
	var steps []step
	for k, l := range b.body {
		switch {
		case strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, " ") && len(steps) > 0:
			steps[len(steps)-1].cmd += " " + strings.TrimSpace(l)
		default:
			steps = append(steps, step{line: b.line + 1 + k, cmd: strings.TrimSpace(l)})
		}
	}
	if len(steps) == 0 {
		t.Fatalf("%s: no command in the synopsis", b)
	}
	flagRE := regexp.MustCompile(`(?:^|[\s\[|])(--[a-z][a-z0-9-]*)`)
	// A parenthesis is prose ("same filters as show, without --entry-id").
	prose := regexp.MustCompile(`\([^)]*\)`)
	for _, s := range steps {
		line, _, _ := strings.Cut(s.cmd, " #")
		line = prose.ReplaceAllString(line, "")
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "arbor" {
			t.Errorf("%s:%d: a synopsis line starts with arbor: %q", b.file, s.line, s.cmd)
			continue
		}
		var words []string
		for _, w := range fields[1:] {
			if !regexp.MustCompile(`^[a-z][a-z0-9-]*$`).MatchString(w) {
				break
			}
			words = append(words, w)
		}
		help, err := h.helpOf(words)
		if err != nil {
			t.Errorf("%s:%d: arbor %s --help: %v", b.file, s.line, strings.Join(words, " "), err)
			continue
		}
		usage := "arbor " + strings.Join(words, " ")
		if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(strings.TrimSpace(usage)) + `(\s|$)`).MatchString(help) {
			t.Errorf("%s:%d: %q is not a command: its --help does not show %q", b.file, s.line, usage, usage)
			continue
		}
		for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
			if !regexp.MustCompile(regexp.QuoteMeta(m[1]) + `\b`).MatchString(help) {
				t.Errorf("%s:%d: %s has no flag %s (not in its --help)", b.file, s.line, usage, m[1])
			}
		}
	}
}

// helpOf runs `arbor WORDS --help`, once per command.
func (h *harness) helpOf(words []string) (string, error) {
	key := strings.Join(words, " ")
	if r, ok := h.help[key]; ok {
		return r.out, r.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "arbor"), append(append([]string{}, words...), "--help")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%v: %s", err, out)
	}
	h.help[key] = helpResult{string(out), err}
	return string(out), err
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func contains(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for k, v := range list {
		if v == s {
			return k
		}
	}
	return -1
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
