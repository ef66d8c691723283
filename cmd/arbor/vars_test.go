package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/statelock"
)

// varsTopology is a file whose root's state directory and whose leaf's
// co-located agent data directory are variables without defaults.
const varsTopology = `trust_domain = "example.org"

variable "root_state" {}
variable "agent_dir" {}

server "root" {
  listen        = "127.0.0.1:0"
  health_listen = "off"
  ca_ttl        = "48h"
  state_dir     = var.root_state
}

server "leaf" {
  parent        = "root"
  listen        = "127.0.0.1:0"
  health_listen = "off"
  agent {
    data_dir = var.agent_dir
    node_attestor "join_token" {}
  }
}
`

// runArborCtx runs arbor with args, bounded in time, and returns its
// stderr and error.
func runArborCtx(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := newRootCommand()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// hold takes the lock a server or agent takes in dir, as another process
// running there would, so that a command given dir stops at once with
// statelock.ErrInUse: proof that dir is the one it was given.
func hold(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := statelock.Acquire(filepath.Join(dir, statelock.FileName), "directory "+dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release() })
}

// --var reaches arbor server and arbor agent run as it does the topology
// subcommands; an undeclared name is refused the same way from --var and
// from ARBOR_VAR_NAME.
func TestVarOnEveryCommand(t *testing.T) {
	dir, err := os.MkdirTemp("", "arv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	topo := filepath.Join(dir, "t.hcl")
	if err := os.WriteFile(topo, []byte(varsTopology), 0o600); err != nil {
		t.Fatal(err)
	}
	rootState, agentDir := filepath.Join(dir, "rs"), filepath.Join(dir, "ad")
	hold(t, rootState)
	hold(t, agentDir)
	vars := []string{"--var", "root_state=" + rootState, "--var", "agent_dir=" + agentDir}

	commands := []struct {
		name string
		args []string
		// inUse is the directory a run given vars must stop at; "" for the
		// topology subcommands, which succeed.
		inUse string
	}{
		{"server", []string{"server", "--topology", topo, "--node", "root"}, rootState},
		{"agent run", []string{"agent", "run", "--topology", topo, "--node", "leaf", "--insecure-bootstrap", "--join-token", "t0ken"}, agentDir},
		{"topology validate", []string{"topology", "validate", topo}, ""},
		{"topology render", []string{"topology", "render", topo, "--node", "root"}, ""},
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			out, err := runArborCtx(t, append(c.args, vars...)...)
			switch {
			case c.inUse != "" && !errors.Is(err, statelock.ErrInUse):
				t.Errorf("arbor %s with --var = %v, want it stopped at the held %s\n%s", c.name, err, c.inUse, out)
			case c.inUse != "" && !strings.Contains(err.Error(), c.inUse):
				t.Errorf("arbor %s with --var = %v, want it to name %s", c.name, err, c.inUse)
			case c.inUse == "" && err != nil:
				t.Errorf("arbor %s with --var = %v\n%s", c.name, err, out)
			}
			if c.name == "topology render" && !strings.Contains(out, rootState) {
				t.Errorf("arbor topology render with --var root_state=%s: output does not hold it:\n%s", rootState, out)
			}

			out, err = runArborCtx(t, c.args...)
			if err == nil || !strings.Contains(out+err.Error(), `Variable "root_state" has no default and no value`) {
				t.Errorf("arbor %s without --var = %v, want Variable not set\n%s", c.name, err, out)
			}

			// An undeclared variable: from --var, then from the environment.
			for _, how := range []struct {
				args   []string
				env    string
				source string
			}{
				{append(slices.Clone(vars), "--var", "regoin=eu"), "", "--var regoin="},
				{vars, "ARBOR_VAR_regoin", "the environment variable ARBOR_VAR_regoin"},
			} {
				if how.env != "" {
					t.Setenv(how.env, "eu")
				}
				out, err := runArborCtx(t, append(slices.Clone(c.args), how.args...)...)
				const want = "t.hcl:3:1: error: Undeclared variable"
				if err == nil || !strings.Contains(out+err.Error(), want) || !strings.Contains(out+err.Error(), how.source+` gives a value for variable "regoin"`) {
					t.Errorf("arbor %s, %s: err %v, want %q from %s\n%s", c.name, how.source, err, want, how.source, out)
				}
			}
		})
	}
}

// parseTopologyFiles gives every file the same --var values and stops at the
// first file that does not parse, naming it.
func TestParseTopologyFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.hcl"), filepath.Join(dir, "b.hcl")
	const src = "trust_domain = %q\nvariable \"port\" {}\nserver \"root\" {\n  listen = \"127.0.0.1:${var.port}\"\n  health_listen = \"off\"\n}\n"
	for path, td := range map[string]string{a: "a.example", b: "b.example"} {
		if err := os.WriteFile(path, []byte(strings.Replace(src, "%q", `"`+td+`"`, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, err := parseTopologyFiles([]string{a, b}, topologyVars{"port=9001"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if got := f.Servers[0].Listen; got != "127.0.0.1:9001" {
			t.Errorf("%s: root listen = %s, want 127.0.0.1:9001", f.Path, got)
		}
	}
	if _, err := parseTopologyFiles([]string{a, filepath.Join(dir, "nope.hcl")}, topologyVars{"port=9001"}); err == nil || !strings.Contains(err.Error(), "nope.hcl") {
		t.Errorf("parseTopologyFiles with a missing file = %v, want an error naming it", err)
	}
	if _, err := parseTopologyFiles([]string{a}, nil); err == nil || !strings.Contains(err.Error(), `Variable "port" has no default`) {
		t.Errorf("parseTopologyFiles without --var = %v, want Variable not set", err)
	}
}
