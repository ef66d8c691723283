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

// Binaries every test uses, set once by TestMain.
var (
	arborBin       string
	spireServerBin string
	spireAgentBin  string
	// setupErr is why the binaries are missing; every test fails with it.
	setupErr error
)

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

// setup builds arbor into dir and locates (building if needed) the SPIRE peers.
func setup(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	arborBin = filepath.Join(dir, "arbor")
	build := exec.CommandContext(ctx, "go", "build", "-o", arborBin, "github.com/arborid/arbor/cmd/arbor")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building arbor: %v\n%s", err, out)
	}

	script, err := filepath.Abs(filepath.Join("..", "spirepeer", "build.sh"))
	if err != nil {
		return err
	}
	var stdout bytes.Buffer
	peer := exec.CommandContext(ctx, "bash", script)
	peer.Stdout = &stdout
	peer.Stderr = os.Stderr // the first build takes minutes; show its progress
	if err := peer.Run(); err != nil {
		return fmt.Errorf("%s: %v", script, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	bin := strings.TrimSpace(lines[len(lines)-1])
	spireServerBin = filepath.Join(bin, "spire-server")
	spireAgentBin = filepath.Join(bin, "spire-agent")
	for _, p := range []string{spireServerBin, spireAgentBin} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s printed %q, but %s is not an executable: %v", script, bin, p, err)
		}
	}
	return nil
}

// requireSetup fails the test when TestMain could not provide the binaries.
func requireSetup(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("e2e setup failed: %v", setupErr)
	}
	if arborBin == "" || spireServerBin == "" {
		t.Fatal(errors.New("e2e setup did not run"))
	}
}
