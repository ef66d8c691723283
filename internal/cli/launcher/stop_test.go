package launcher

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// stopAll stops every running child and names the one it had to kill: a
// child that ignores SIGTERM is killed after stopGrace, one that obeys it is
// not, and one stopped before (arbor up --stop) is not counted again.
func TestStopAllNamesKilledChildren(t *testing.T) {
	fork, stopFork := newForker()
	defer stopFork()
	dir := t.TempDir()
	l := &launcher{opts: Options{Exe: "/bin/sh"}, exits: make(chan error, 8), fork: fork}
	start := func(name, script string) *proc {
		t.Helper()
		p, err := l.start(name, filepath.Join(dir, name+".log"), "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	stopped := start("stopped before", "exec sleep 60")
	start("obeys SIGTERM", "exec sleep 60")
	stuck := start("ignores SIGTERM", "trap '' TERM; echo trapped; exec sleep 60")
	// The shell must have set its trap before the stop.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(stuck.log); string(b) == "trapped\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell did not set its trap within 10s")
		}
	}
	if killed := stopped.stop(); killed {
		t.Fatal("a child that obeys SIGTERM was killed")
	}
	began := time.Now()
	running, killed := l.stopAll()
	took := time.Since(began)
	if running != 2 || !slices.Equal(killed, []string{"ignores SIGTERM"}) {
		t.Errorf("stopAll = %d running, killed %q; want 2 running, killed [ignores SIGTERM]", running, killed)
	}
	if took < stopGrace {
		t.Errorf("stopAll took %v: the stuck child was killed before its %v of grace", took, stopGrace)
	}
}
