package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is one reading of a process's resident memory and CPU time.
type ProcSample struct {
	RSSBytes   int64
	CPUSeconds float64
}

// ReadProc reads a process's RSS (VmRSS of /proc/<pid>/status) and user+system
// CPU seconds (/proc/<pid>/stat).
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("loadgen: reading process status: %w", err)
	}
	found := false
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return s, fmt.Errorf("loadgen: parsing VmRSS of pid %d: %w", pid, err)
			}
			s.RSSBytes = kb * 1024
			found = true
			break
		}
	}
	if !found {
		return s, fmt.Errorf("loadgen: pid %d has no VmRSS (a zombie?)", pid)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("loadgen: reading process stat: %w", err)
	}
	// The command name (field 2) may hold spaces and parentheses; the fields
	// after the last ')' start with field 3 (state).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("loadgen: malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return s, fmt.Errorf("loadgen: short /proc/%d/stat", pid)
	}
	// utime and stime are fields 14 and 15, i.e. indexes 11 and 12 here.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("loadgen: parsing CPU times of pid %d", pid)
	}
	s.CPUSeconds = float64(utime+stime) / clockTicks
	return s, nil
}

// procWatch samples a process until stopped and keeps its peak RSS.
type procWatch struct {
	pid   int
	start ProcSample
	mu    sync.Mutex
	peak  int64
	last  ProcSample
	stop  chan struct{}
	done  chan struct{}
}

// watchProc starts sampling pid every interval; nil when pid is 0 or the
// process cannot be read.
func watchProc(pid int, every time.Duration) *procWatch {
	if pid <= 0 {
		return nil
	}
	s, err := ReadProc(pid)
	if err != nil {
		return nil
	}
	w := &procWatch{pid: pid, start: s, peak: s.RSSBytes, last: s, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w
}

func (w *procWatch) sample() {
	s, err := ReadProc(w.pid)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = s
	w.peak = max(w.peak, s.RSSBytes)
}

func (w *procWatch) rss() int64 {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last.RSSBytes
}

// finish stops sampling and returns the phase's statistics.
func (w *procWatch) finish() *ProcStats {
	if w == nil {
		return nil
	}
	close(w.stop)
	<-w.done
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return &ProcStats{PID: w.pid, RSSStartBytes: w.start.RSSBytes, RSSEndBytes: w.last.RSSBytes,
		RSSPeakBytes: w.peak, CPUSeconds: w.last.CPUSeconds - w.start.CPUSeconds}
}

// MachineBusySeconds reads the CPU seconds all processors of the machine
// have spent busy (user, nice, system, irq, softirq, steal) since boot, from
// the first line of /proc/stat.
func MachineBusySeconds() (float64, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("loadgen: reading /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("loadgen: malformed /proc/stat line %q", line)
	}
	var busy int64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: parsing /proc/stat: %w", err)
		}
		busy += v
	}
	return float64(busy) / clockTicks, nil
}
