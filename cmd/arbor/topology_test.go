package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
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

func TestTopologyCommands(t *testing.T) {
	const multi = "../../examples/three-tier-multicloud.hcl"
	tests := []struct {
		name    string
		args    []string
		want    []string // fragments of the output
		wantErr bool
	}{
		{"validate clean", []string{"topology", "validate", multi}, []string{"valid: 5 server(s), 0 error(s), 0 warning(s)"}, false},
		{"validate errors", []string{"topology", "validate", "../../topology/testdata/invalid/child-ca-ttl.hcl"},
			[]string{"child-ca-ttl.hcl:16:19: error: CA TTL too long for the parent", "Set ca_ttl on \"edge\" to at most 15d"}, true},
		{"validate warning exits 0", []string{"topology", "validate", "../../topology/testdata/invalid/warn-sqlite-replicas.hcl"}, []string{"warning: SQLite with replicas"}, false},
		{"var flag", []string{"topology", "validate", "--var", "leaf_ca_ttl=20d", multi}, []string{"CA TTL too long for the parent"}, true},
		{"plan", []string{"topology", "plan", multi}, []string{"└─ aws-us-east-1a", "84h"}, false},
		{"render json", []string{"topology", "render", multi, "--node", "aws-us-east-1a", "--format", "json"}, []string{`"ca_ttl": "7d"`}, false},
		{"render unknown node", []string{"topology", "render", multi, "--node", "nope"}, nil, true},
		{"graph", []string{"topology", "graph", multi, "--format", "mermaid"}, []string{"n0 -->|x509pop| n1"}, false},
		{"simulate survivable", []string{"topology", "simulate", multi, "--down", "aws-us-east-1", "--for", "20m"}, []string{"survivable: no workload loses identity"}, false},
		{"simulate not survivable", []string{"topology", "simulate", multi, "--down", "aws-us-east-1a", "--for", "2h", "--at", "2025-01-10T08:00:00Z"},
			[]string{"+30m 2025-01-10T08:30:00Z", "NOT survivable"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runArbor(tt.args...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("arbor %s: err = %v, want error %v\n%s", strings.Join(tt.args, " "), err, tt.wantErr, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("arbor %s output lacks %q:\n%s", strings.Join(tt.args, " "), w, out)
				}
			}
		})
	}
	if _, err := runArbor("topology", "simulate", multi, "--down", "aws-us-east-1a", "--for", "2h"); !errors.Is(err, errNotSurvivable) {
		t.Errorf("simulate not survivable: err = %v, want errNotSurvivable", err)
	}
}

func TestTopologyHelpShowsExamples(t *testing.T) {
	for _, sub := range []string{"validate", "plan", "render", "graph", "simulate"} {
		out, err := runArbor("topology", sub, "--help")
		if err != nil || !strings.Contains(out, "Examples:") || !strings.Contains(out, "arbor topology "+sub) {
			t.Errorf("arbor topology %s --help: err %v, output:\n%s", sub, err, out)
		}
	}
}
