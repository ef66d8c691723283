package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/topology"
)

func runArbor(args ...string) (string, error) {
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// examples/x509pop.hcl as shipped names an agent CA the reader makes first:
// validate warns about it (at the attribute) and exits 0; once the file is
// there the warning is gone. (A copy, so a CA made in examples/ by
// following the header does not change the test.)
func TestValidateWarnsAboutMissingFile(t *testing.T) {
	src, err := os.ReadFile("../../examples/x509pop.hcl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "x509pop.hcl")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runArbor("topology", "validate", path)
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	for _, want := range []string{"x509pop.hcl:41:24: warning: File not found", filepath.Join(dir, "agent-ca.pem") + " does not exist", "1 server(s), 0 error(s), 1 warning(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "agent-ca.pem"), []byte("made by the reader"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runArbor("topology", "validate", path)
	if err != nil || !strings.Contains(out, "0 error(s), 0 warning(s)") {
		t.Errorf("validate with the CA present: %v\n%s", err, out)
	}
}

func TestTopologyCommands(t *testing.T) {
	const multi = "../../examples/multi-cloud.hcl"
	tests := []struct {
		name    string
		args    []string
		want    []string // fragments of the output
		wantErr bool
	}{
		{"validate clean", []string{"topology", "validate", multi}, []string{"valid: 7 server(s), 0 error(s), 0 warning(s)"}, false},
		{"validate errors", []string{"topology", "validate", "../../topology/testdata/invalid/child-ca-ttl.hcl"},
			[]string{"child-ca-ttl.hcl:16:19: error: CA TTL too long for the parent", "Set ca_ttl on \"edge\" to at most 15d"}, true},
		{"validate reports every problem at once", []string{"topology", "validate", "../../topology/testdata/invalid/attribute-error-and-cross-block.hcl"},
			[]string{"attribute-error-and-cross-block.hcl:17:19: error: Invalid duration", "attribute-error-and-cross-block.hcl:24:22: error: Unknown federated trust domain",
				"attribute-error-and-cross-block.hcl:37:9: error: Duplicate entry name", "attribute-error-and-cross-block.hcl:46:19: error: Duplicate listen port",
				"attribute-error-and-cross-block.hcl:18:19: warning: SQLite with replicas", "7 error(s), 2 warning(s)"}, true},
		{"validate warning exits 0", []string{"topology", "validate", "../../topology/testdata/invalid/warn-sqlite-replicas.hcl"}, []string{"warning: SQLite with replicas"}, false},
		{"var flag", []string{"topology", "validate", "--var", "leaf_ca_ttl=20d", multi}, []string{"CA TTL too long for the parent"}, true},
		{"plan", []string{"topology", "plan", multi}, []string{"└─ aws-us-east-1a", "84h"}, false},
		{"render json", []string{"topology", "render", multi, "--node", "aws-us-east-1a", "--format", "json"}, []string{`"ca_ttl": "7d"`}, false},
		{"render unknown node", []string{"topology", "render", multi, "--node", "nope"}, nil, true},
		{"graph", []string{"topology", "graph", multi, "--format", "mermaid"}, []string{"n0 -->|aws_iid| n1", "n1 -->|k8s_psat| n2"}, false},
		{"graph svg", []string{"topology", "graph", multi, "--format", "svg"}, []string{`<svg xmlns="http://www.w3.org/2000/svg"`, ">aws-us-east-1a</text>", "</svg>"}, false},
		{"graph bad format", []string{"topology", "graph", multi, "--format", "png"}, []string{"want dot, mermaid or svg"}, true},
		{"render spire", []string{"topology", "render", multi, "--node", "aws-us-east-1a", "--format", "spire"},
			[]string{`UpstreamAuthority "spire"`, `server_address      = "arbor.us-east-1.aws.example.org"`, spireAgentSeparator, `WorkloadAttestor "unix"`}, false},
		{"render spire root has no agent.conf", []string{"topology", "render", multi, "--node", "root", "--format", "spire"}, []string{`UpstreamAuthority "aws_pca"`}, false},
		{"render out needs spire", []string{"topology", "render", multi, "--node", "root", "--out", "x"}, []string{"--out is for --format spire"}, true},
		{"simulate survivable", []string{"topology", "simulate", multi, "--down", "aws-us-east-1", "--for", "20m"}, []string{"survivable: no workload loses identity"}, false},
		{"simulate not survivable", []string{"topology", "simulate", multi, "--down", "aws-us-east-1a", "--for", "2h", "--at", "2025-01-10T08:00:00Z"},
			[]string{"+30m 2025-01-10T08:30:00Z", "NOT survivable"}, true},
		{"simulate bad at", []string{"topology", "simulate", multi, "--down", "root", "--for", "2h", "--at", "tomorrow"}, []string{"want an RFC 3339 time"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runArbor(tt.args...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("arbor %s: err = %v, want error %v\n%s", strings.Join(tt.args, " "), err, tt.wantErr, out)
			}
			if err != nil {
				out += "\nerror: " + err.Error() // what main prints
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("arbor %s output lacks %q:\n%s", strings.Join(tt.args, " "), w, out)
				}
			}
		})
	}
	_, err := runArbor("topology", "simulate", multi, "--down", "aws-us-east-1a", "--for", "2h", "--at", "2025-01-10T08:00:00Z")
	if !errors.Is(err, errNotSurvivable) || !strings.Contains(err.Error(), "first at 2025-01-10T08:02:30Z (jwt-svids on aws-us-east-1a)") {
		t.Errorf("simulate not survivable: err = %v, want errNotSurvivable saying when identity is first lost", err)
	}
	if _, err := runArbor("topology", "simulate", multi, "--down", "aws-us-east-1", "--for", "20m"); err != nil {
		t.Errorf("simulate survivable: err = %v, want nil", err)
	}
}

// TestTopologySimulateDefaultsToNow checks that without --at (or with
// --at now) the outage starts at the command's clock.
func TestTopologySimulateDefaultsToNow(t *testing.T) {
	now := time.Date(2025, 3, 1, 10, 0, 0, 123, time.UTC)
	for _, extra := range [][]string{nil, {"--at", "now"}} {
		cmd := newTopologySimulateCommandAt(func() time.Time { return now })
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"../../examples/multi-cloud.hcl", "--down", "aws-us-east-1", "--for", "40m"}, extra...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("simulate %v: %v\n%s", extra, err, out.String())
		}
		for _, want := range []string{"aws-us-east-1 down for 40m from 2025-03-01T10:00:00Z", "+30m 2025-03-01T10:30:00Z", "+40m 2025-03-01T10:40:00Z", "aws-us-east-1 returns", "survivable:"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("simulate %v output lacks %q:\n%s", extra, want, out.String())
			}
		}
	}
}

// mainArgsEnv makes the test binary run main with the arguments it holds
// (separated by ASCII unit separators): TestTopologyExitStatus runs the real main that way to
// see its exit status.
const mainArgsEnv = "ARBOR_TEST_MAIN_ARGS"

// TestRunMain is not a test of its own: it is how TestTopologyExitStatus
// runs main in a child process. Without the environment variable it
// returns at once.
func TestRunMain(t *testing.T) {
	args, ok := os.LookupEnv(mainArgsEnv)
	if !ok {
		return
	}
	os.Args = append([]string{"arbor"}, strings.Split(args, "\x1f")...)
	main()
}

// TestTopologyExitStatus runs the real binary's main for simulate and
// validate and checks the exit status and what it prints on stderr.
func TestTopologyExitStatus(t *testing.T) {
	const multi = "../../examples/multi-cloud.hcl"
	tests := []struct {
		name       string
		args       []string
		wantStatus int
		wantStderr string
	}{
		{"survivable", []string{"topology", "simulate", multi, "--down", "aws-us-east-1", "--for", "20m"}, 0, ""},
		{"leaf down", []string{"topology", "simulate", multi, "--down", "aws-us-east-1a", "--for", "2h"}, 1, "arbor: not survivable: workloads lose identity during the outage: first at "},
		{"root down", []string{"topology", "simulate", multi, "--down", "root", "--for", "20d"}, 1, "(ca-expired on aws-us-east-1), 15d into a 20d outage of root"},
		{"validate errors", []string{"topology", "validate", "../../topology/testdata/invalid/cycle.hcl"}, 1, "arbor: ../../topology/testdata/invalid/cycle.hcl: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRunMain$")
			cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join(tt.args, "\x1f"))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			status := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				status = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.wantStatus || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("arbor %s: exit status %d, stderr %q; want %d and %q", strings.Join(tt.args, " "), status, stderr.String(), tt.wantStatus, tt.wantStderr)
			}
		})
	}
}

// TestTopologyRenderSPIREOut checks that --out writes the two files the
// package renders, readable only by their owner (they may hold secrets).
func TestTopologyRenderSPIREOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spire")
	out, err := runArbor("topology", "render", "../../examples/multi-cloud.hcl", "--node", "aws-us-east-1", "--format", "spire", "--out", dir)
	if err != nil {
		t.Fatalf("render --out: %v\n%s", err, out)
	}
	f, diags := topology.ParseFile("../../examples/multi-cloud.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	cfg, err := topology.RenderSPIRE(f, "aws-us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	for name, write := range map[string]func(io.Writer) error{"server.conf": cfg.WriteServerConf, "agent.conf": cfg.WriteAgentConf} {
		var want bytes.Buffer
		if err := write(&want); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("render --out did not write %s: %v", name, err)
		}
		if string(got) != want.String() {
			t.Errorf("%s differs from RenderSPIRE's:\n%s", name, got)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v (%v), want 0600", name, fi.Mode().Perm(), err)
		}
		if !strings.Contains(out, "wrote "+path) {
			t.Errorf("render --out output lacks %q: %s", "wrote "+path, out)
		}
	}
}

// TestTopologyHelpShowsExamples checks --help of the topology command and
// of every subcommand it has (now and later) for an example that runs it.
func TestTopologyHelpShowsExamples(t *testing.T) {
	subs := newTopologyCommand().Commands()
	if len(subs) < 6 {
		t.Fatalf("topology has %d subcommands, want validate, plan, render, graph, simulate, apply", len(subs))
	}
	names := []string{""}
	for _, c := range subs {
		names = append(names, c.Name())
	}
	for _, sub := range names {
		args := []string{"topology", "--help"}
		want := "arbor topology "
		if sub != "" {
			args = []string{"topology", sub, "--help"}
			want += sub + " "
		}
		out, err := runArbor(args...)
		_, example, _ := strings.Cut(out, "Examples:")
		if err != nil || !strings.Contains(example, want) {
			t.Errorf("arbor %s: err %v, want an example running %q under Examples:\n%s", strings.Join(args, " "), err, want, out)
		}
	}
}
