package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"
)

// gcTraceEnv makes a server's Go runtime print one line per garbage
// collection to its log (both arbor and spire-server are Go programs), which
// serverGC reads back per phase. It costs one short write per cycle.
const gcTraceEnv = "GODEBUG=gctrace=1"

// PhaseGC is what garbage collection did during one phase, in the server and
// in this process (the load generator, which shares the machine's cores): a
// sync that overlaps a stop-the-world pause or a mark phase waits for it.
type PhaseGC struct {
	// ServerCycles is how many collections the server started in the phase.
	ServerCycles int `json:"server_cycles"`
	// ServerSTWMS is the wall time of the server's stop-the-world pauses
	// (sweep termination plus mark termination), summed and the longest.
	ServerSTWMS    float64 `json:"server_stw_ms"`
	ServerMaxSTWMS float64 `json:"server_max_stw_ms"`
	// ServerMarkMS is the wall time the server spent in concurrent mark
	// (write barriers on, assists and a background worker taking a core).
	ServerMarkMS float64 `json:"server_mark_ms"`
	// ServerHeapMB is the live heap after the phase's last collection.
	ServerHeapMB float64 `json:"server_heap_mb,omitempty"`
	// ClientCycles, ClientPauseMS and ClientMaxPauseMS are the same for
	// this process (runtime/debug.ReadGCStats).
	ClientCycles     int     `json:"client_cycles"`
	ClientPauseMS    float64 `json:"client_pause_ms"`
	ClientMaxPauseMS float64 `json:"client_max_pause_ms"`
}

// gcWatch notes where a phase begins: the length of the server's log and
// this process's collections so far.
type gcWatch struct {
	log    string
	offset int64
	start  time.Time
	numGC  int64
}

func watchGC(serverLog string) *gcWatch {
	w := &gcWatch{log: serverLog, start: time.Now()}
	if fi, err := os.Stat(serverLog); err == nil {
		w.offset = fi.Size()
	}
	var st debug.GCStats
	debug.ReadGCStats(&st)
	w.numGC = st.NumGC
	return w
}

// done returns what garbage collection did since watchGC.
func (w *gcWatch) done() *PhaseGC {
	g := &PhaseGC{}
	var st debug.GCStats
	debug.ReadGCStats(&st)
	g.ClientCycles = int(st.NumGC - w.numGC)
	// Pause and PauseEnd hold the most recent pauses, newest first.
	for i, end := range st.PauseEnd {
		if !end.After(w.start) || i >= len(st.Pause) {
			break
		}
		ms := float64(st.Pause[i]) / 1e6
		g.ClientPauseMS += ms
		g.ClientMaxPauseMS = max(g.ClientMaxPauseMS, ms)
	}
	if f, err := os.Open(w.log); err == nil {
		defer f.Close()
		if _, err := f.Seek(w.offset, io.SeekStart); err == nil {
			addServerGC(g, f)
		}
	}
	return g
}

// gcLine matches a gctrace line: "gc 12 @3.456s 2%: 0.1+40+0.02 ms clock,
// ..., 101->116->69 MB, ..." (runtime package documentation, GODEBUG).
var gcLine = regexp.MustCompile(`^gc \d+ @[\d.]+s \d+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock, .*?(\d+)->(\d+)->(\d+) MB`)

func addServerGC(g *PhaseGC, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("gc ")) {
			continue
		}
		m := gcLine.FindSubmatch(line)
		if m == nil {
			continue
		}
		sweepTerm, mark, markTerm := atof(m[1]), atof(m[2]), atof(m[3])
		g.ServerCycles++
		g.ServerSTWMS += sweepTerm + markTerm
		g.ServerMaxSTWMS = max(g.ServerMaxSTWMS, sweepTerm, markTerm)
		g.ServerMarkMS += mark
		g.ServerHeapMB = atof(m[6])
	}
}

func atof(b []byte) float64 {
	f, _ := strconv.ParseFloat(string(b), 64)
	return f
}
