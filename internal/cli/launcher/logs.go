package launcher

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/arborid/arbor/topology"
)

// Every child of arbor up writes to its own log file in the logs directory
// of the server it belongs to (its state_dir/logs): server.log, NAME-agent.log
// (the co-located agent), workload-agent.log and demo.log. `arbor logs`
// reads them back, merged.

// LogMaxBytes is the size past which arbor up rotates a child's log: the
// file is copied to NAME.log.1 (replacing the previous one) and truncated,
// so each child keeps at most about twice this on disk.
const LogMaxBytes = 4 << 20

// rotateEvery is how often arbor up checks its children's log sizes.
const rotateEvery = 2 * time.Second

// logDir is the folder of the logs of s and of the processes beside it.
func logDir(s *topology.Server) string {
	return filepath.Join(s.StateDir, "logs")
}

// rotateLog rotates the log at path once it holds more than max bytes.
// The child keeps its file open with O_APPEND, so after the truncation its
// writes go on at the start of the emptied file; a line it writes between
// the copy and the truncation is lost (the copy takes milliseconds).
func rotateLog(path string, max int64) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= max {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".1.tmp", b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(path+".1.tmp", path+".1"); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}

// rotateLogs rotates the logs of l's children until ctx ends.
func (l *launcher) rotateLogs(ctx context.Context) {
	t := time.NewTicker(rotateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		paths := make([]string, 0, len(l.procs))
		for _, p := range l.procs {
			paths = append(paths, p.log)
		}
		l.mu.Unlock()
		slices.Sort(paths)
		for _, p := range slices.Compact(paths) {
			rotateLog(p, LogMaxBytes)
		}
	}
}

// LogsOptions configures Logs.
type LogsOptions struct {
	// Out receives the lines, each prefixed by TIER/PROCESS.
	Out io.Writer
	// Tail, when positive, prints only the last Tail lines of the merge
	// (before following).
	Tail int
	// Follow keeps printing lines as they are written, until ctx ends.
	Follow bool
	// PollEvery is how often Follow looks for new lines; zero means 200ms.
	PollEvery time.Duration
}

// ErrNoLogs is returned by Logs when there is no log to read yet.
var ErrNoLogs = errors.New("no logs")

// logSource is one process's log file.
type logSource struct {
	prefix string // TIER/PROCESS
	path   string
	// While following: what was read of the file.
	ino     uint64
	off     int64
	partial []byte
}

// logLine is one line of a log with the time it starts with.
type logLine struct {
	at     time.Time
	prefix string
	text   string
}

// Logs prints the logs of the tree of f that arbor up runs or ran, merged
// in time order, each line prefixed by the tier and the process it comes
// from; nodes, when given, keeps the logs of those servers only (with the
// agents and demo workload beside them).
func Logs(ctx context.Context, f *topology.File, nodes []string, opts LogsOptions) error {
	var servers []*topology.Server
	for _, name := range nodes {
		s, err := f.Replica(name)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	if len(nodes) == 0 {
		for _, s := range f.Walk() {
			servers = append(servers, s.ReplicaList()...)
		}
	}
	width := 0
	known := map[string]*logSource{}
	var sources []*logSource
	discover := func() []*logSource {
		var found []*logSource
		for _, s := range servers {
			paths, _ := filepath.Glob(filepath.Join(logDir(s), "*.log"))
			for _, p := range paths {
				if known[p] != nil {
					continue
				}
				src := &logSource{prefix: s.Node() + "/" + processName(s, filepath.Base(p)), path: p}
				known[p] = src
				sources = append(sources, src)
				found = append(found, src)
				width = max(width, len(src.prefix))
			}
		}
		return found
	}
	discover()
	if len(sources) == 0 && !opts.Follow {
		var dirs []string
		for _, s := range servers {
			dirs = append(dirs, logDir(s))
		}
		return fmt.Errorf("%w of %s yet (none in %s); arbor up %s writes them", ErrNoLogs, f.Path, strings.Join(dirs, ", "), f.Path)
	}
	var lines []logLine
	for _, src := range sources {
		lines = append(lines, src.readAll()...)
	}
	sortLines(lines)
	if opts.Tail > 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	w := bufio.NewWriter(opts.Out)
	print := func(lines []logLine) error {
		for _, l := range lines {
			fmt.Fprintf(w, "%-*s | %s\n", width, l.prefix, l.text)
		}
		return w.Flush()
	}
	if err := print(lines); err != nil || !opts.Follow {
		return err
	}
	every := opts.PollEvery
	if every == 0 {
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// A log that appears later (a tier started with --start, the demo
		// workloads) is read from its start.
		for _, src := range discover() {
			src.ino, src.off = 0, 0
		}
		var fresh []logLine
		for _, src := range sources {
			fresh = append(fresh, src.readNew()...)
		}
		sortLines(fresh)
		if err := print(fresh); err != nil {
			return err
		}
	}
}

// processName names a log file's process for the prefix: server, agent
// (the co-located one), workload-agent, demo.
func processName(s *topology.Server, file string) string {
	name := strings.TrimSuffix(file, ".log")
	if name == s.Name+"-agent" {
		return "agent"
	}
	return name
}

// readAll reads the rotated log and the current one, and remembers how far
// it read, for readNew.
func (src *logSource) readAll() []logLine {
	var out []logLine
	if b, err := os.ReadFile(src.path + ".1"); err == nil {
		out = append(out, src.split(b, true)...)
	}
	f, err := os.Open(src.path)
	if err != nil {
		return out
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return out
	}
	if fi, err := f.Stat(); err == nil {
		src.ino = inode(fi)
	}
	src.off = int64(len(b))
	return append(out, src.split(b, false)...)
}

// readNew reads what was appended since the last read; a file truncated
// (rotated) or replaced is read again from its start.
func (src *logSource) readNew() []logLine {
	f, err := os.Open(src.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	if ino := inode(fi); ino != src.ino || fi.Size() < src.off {
		src.ino, src.off, src.partial = ino, 0, nil
	}
	if fi.Size() == src.off {
		return nil
	}
	b, err := io.ReadAll(io.NewSectionReader(f, src.off, fi.Size()-src.off))
	if err != nil {
		return nil
	}
	src.off += int64(len(b))
	return src.split(b, false)
}

// split cuts b into lines; an unfinished last line waits for its end
// (unless whole, for a file no longer written).
func (src *logSource) split(b []byte, whole bool) []logLine {
	if !whole {
		b = append(src.partial, b...)
		src.partial = nil
		if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
			src.partial = slices.Clone(b[i+1:])
			b = b[:i+1]
		}
	}
	var out []logLine
	var last time.Time
	for line := range strings.SplitSeq(strings.TrimRight(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		// A line without a time (a panic's stack) keeps the one before.
		if at, ok := lineTime(line); ok {
			last = at
		}
		out = append(out, logLine{at: last, prefix: src.prefix, text: line})
	}
	return out
}

// sortLines orders lines by time, keeping each file's order for equal
// times.
func sortLines(lines []logLine) {
	slices.SortStableFunc(lines, func(a, b logLine) int { return a.at.Compare(b.at) })
}

// lineTime is the time a log line starts with: slog's text (time=...) or
// JSON ("time":"...") handler.
func lineTime(line string) (time.Time, bool) {
	var v string
	switch {
	case strings.HasPrefix(line, "time="):
		v, _, _ = strings.Cut(line[len("time="):], " ")
	case strings.HasPrefix(line, `{"time":"`):
		v, _, _ = strings.Cut(line[len(`{"time":"`):], `"`)
	default:
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	return at, err == nil
}

// inode identifies a file across renames (0 where unknown).
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
