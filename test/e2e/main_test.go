package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spirePeer is one SPIRE release built as a test peer.
type spirePeer struct {
	version string // e.g. "v1.15.3"
	server  string // spire-server binary
	agent   string // spire-agent binary
}

// Binaries every test uses, set once by TestMain.
var (
	arborBin string
	// spirePeers are the SPIRE releases the interop tests run against,
	// oldest first: test/spirepeer/build.sh's "all" list. The first one is
	// the peer of the tests that do not run against every release.
	spirePeers []*spirePeer
	// setupErr is why the binaries are missing; every test fails with it.
	setupErr error
)

// defaultSpire is the peer of tests that run against one SPIRE release.
func defaultSpire() *spirePeer { return spirePeers[0] }

// forEachSpire runs f as a subtest named after each SPIRE release, one
// release after the other.
func forEachSpire(t *testing.T, f func(t *testing.T, p *spirePeer)) {
	t.Helper()
	requireSetup(t)
	for _, p := range spirePeers {
		t.Run(p.version, func(t *testing.T) { f(t, p) })
	}
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-e2e-bin")
	if err != nil {
		setupErr = err
	} else {
		setupErr = setup(dir)
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// setup builds arbor into dir and locates (building if needed, one after the
// other: about 5-7 minutes each on 2 cores the first time) the SPIRE peers.
func setup(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	arborBin = filepath.Join(dir, "arbor")
	goBuild := exec.CommandContext(ctx, "go", "build", "-o", arborBin, "github.com/arborid/arbor/cmd/arbor")
	if out, err := goBuild.CombinedOutput(); err != nil {
		return fmt.Errorf("building arbor: %v\n%s", err, out)
	}

	script, err := filepath.Abs(filepath.Join("..", "spirepeer", "build.sh"))
	if err != nil {
		return err
	}
	var stdout bytes.Buffer
	build := exec.CommandContext(ctx, "bash", script, "all")
	build.Stdout = &stdout
	build.Stderr = os.Stderr // the first build takes minutes; show its progress
	if err := build.Run(); err != nil {
		return fmt.Errorf("%s all: %v", script, err)
	}
	// One bin directory per release, <cache>/<version>/bin, in order.
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		bin := strings.TrimSpace(line)
		p := &spirePeer{
			version: filepath.Base(filepath.Dir(bin)),
			server:  filepath.Join(bin, "spire-server"),
			agent:   filepath.Join(bin, "spire-agent"),
		}
		for _, exe := range []string{p.server, p.agent} {
			if fi, err := os.Stat(exe); err != nil || fi.Mode()&0o111 == 0 {
				return fmt.Errorf("%s printed %q, but %s is not an executable: %v", script, bin, exe, err)
			}
		}
		spirePeers = append(spirePeers, p)
	}
	if len(spirePeers) == 0 {
		return fmt.Errorf("%s all printed no bin directory", script)
	}
	return nil
}

// requireSetup fails the test when TestMain could not provide the binaries.
func requireSetup(t testing.TB) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("e2e setup failed: %v", setupErr)
	}
	if arborBin == "" || len(spirePeers) == 0 {
		t.Fatal(errors.New("e2e setup did not run"))
	}
}
