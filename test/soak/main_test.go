package soak

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/arborid/arbor/test/bench/benchproc"
)

// arborBin is the arbor binary TestMain builds once for the package.
var (
	arborBin string
	setupErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-soak-bin")
	if err != nil {
		setupErr = err
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		repo, rerr := benchproc.RepoRoot()
		if rerr != nil {
			setupErr = rerr
		} else {
			arborBin, setupErr = benchproc.BuildArbor(ctx, repo, dir)
		}
		cancel()
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

func requireArbor(t testing.TB) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("building arbor: %v", setupErr)
	}
}
