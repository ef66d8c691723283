package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestVersionLine(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	mod := debug.Module{Path: "github.com/arborid/arbor", Version: "v0.4.0"}
	tests := []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"released", &debug.BuildInfo{GoVersion: "go1.26.8", Main: mod},
			"arbor v0.4.0 go1.26.8 (no version control information: built outside a checkout or with -buildvcs=false)"},
		{"checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: mod,
			Settings: vcs("vcs", "git", "vcs.revision", "abc123", "vcs.time", "2026-12-02T10:00:00Z", "vcs.modified", "false")},
			"arbor v0.4.0 (revision abc123, 2026-12-02T10:00:00Z) go1.26.8"},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/arborid/arbor", Version: "v0.0.0-20261202100000-abc123+dirty"},
			Settings: vcs("vcs.revision", "abc123", "vcs.time", "2026-12-02T10:00:00Z", "vcs.modified", "true")},
			"arbor v0.0.0-20261202100000-abc123+dirty (revision abc123, 2026-12-02T10:00:00Z, modified) go1.26.8"},
		{"no build information", nil,
			"arbor (devel) (no version control information: built outside a checkout or with -buildvcs=false)"},
	}
	for _, tt := range tests {
		if got := versionOf(tt.info).String(); got != tt.want {
			t.Errorf("%s: versionOf(...).String() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// The binary built from this checkout names its revision: arbor --version
// and arbor version print the same line, --output json the same fields.
func TestVersionOfBuiltBinary(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	head := func() string {
		out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD: %v (the test builds arbor from this checkout and needs git)", err)
		}
		return strings.TrimSpace(string(out))
	}
	before := head()
	bin := filepath.Join(t.TempDir(), "arbor")
	if out, err := exec.CommandContext(ctx, "go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	after := head() // others may commit meanwhile
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		if err != nil {
			t.Fatalf("arbor %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	flag, cmd := run("--version"), run("version")
	if flag != cmd {
		t.Errorf("arbor --version printed %q, arbor version %q; want the same line", flag, cmd)
	}
	var v buildVersion
	if err := json.NewDecoder(bytes.NewReader([]byte(run("version", "--output", "json")))).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.Revision != before && v.Revision != after {
		t.Errorf("vcs_revision %q, want HEAD (%s)", v.Revision, before)
	}
	if v.Module != "github.com/arborid/arbor" || v.Time == "" || !strings.HasPrefix(v.Go, "go") {
		t.Errorf("arbor version --output json = %+v, want the module, a commit time and the Go version", v)
	}
	if !strings.Contains(cmd, "(revision "+v.Revision+", "+v.Time) {
		t.Errorf("arbor version printed %q, want the revision %s and its time", cmd, v.Revision)
	}
}
