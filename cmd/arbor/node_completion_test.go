package main

import (
	"bytes"
	"strings"
	"testing"
)

// Node names complete from the topology files on the command line: arbor
// logs FILE NODE..., and arbor up --stop/--start NAME, TD/NAME where two
// files declare the name.
func TestNodeNamesComplete(t *testing.T) {
	quick := "../../examples/quickstart.hcl"
	org, partner := "../../examples/federation/example-org.hcl", "../../examples/federation/partner.hcl"
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"logs", quick, ""}, []string{"root", "regional", "leaf-a", "leaf-b"}},
		{[]string{"logs", quick, "leaf-a", ""}, []string{"root", "regional", "leaf-a", "leaf-b"}},
		{[]string{"up", quick, "--stop", ""}, []string{"root", "regional", "leaf-a", "leaf-b"}},
		{[]string{"up", org, partner, "--start", ""}, []string{"example.org/root", "regional", "example.org/leaf", "partner.example/root", "partner.example/leaf"}},
		{[]string{"up", "../../examples/replicas.hcl", "--stop", ""}, []string{"root", "root/2", "root/3"}},
		{[]string{"logs", "no-such-file.hcl", ""}, nil},
	}
	for _, tt := range tests {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(append([]string{"__complete"}, tt.args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("arbor __complete %v: %v", tt.args, err)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if !strings.HasPrefix(line, ":") {
				got = append(got, line)
			}
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("arbor __complete %v = %q, want %q", tt.args, got, tt.want)
		}
	}
}
