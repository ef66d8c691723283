package main

import (
	"strings"
	"testing"
)

// A command taking a topology FILE says FILE when it is missing, and an
// unreadable file is blamed on what named it: FILE for the topology
// subcommands, --topology where that flag exists.
func TestTopologyFileMessages(t *testing.T) {
	tests := []struct {
		args    []string
		want    []string
		notWant string
	}{
		{[]string{"topology", "validate"}, []string{"missing FILE", "usage: arbor topology validate FILE"}, ""},
		{[]string{"topology", "plan"}, []string{"missing FILE", "usage: arbor topology plan FILE"}, ""},
		{[]string{"topology", "apply"}, []string{"missing FILE", "usage: arbor topology apply FILE"}, ""},
		{[]string{"topology", "validate", "a.hcl", "b.hcl"}, []string{"one FILE only", "2 arguments (a.hcl b.hcl)"}, ""},
		{[]string{"topology", "validate", "nope.hcl"}, []string{"cannot read the topology file given as FILE: open nope.hcl"}, "--topology"},
		{[]string{"topology", "simulate", "nope.hcl", "--down", "x", "--for", "1h"}, []string{"given as FILE"}, "--topology"},
		{[]string{"server", "--topology", "nope.hcl", "--node", "root"}, []string{"cannot read the topology file given as --topology: open nope.hcl"}, ""},
		{[]string{"agent", "run", "--topology", "nope.hcl", "--node", "leaf"}, []string{"given as --topology"}, ""},
	}
	for _, tt := range tests {
		out, err := runArborCtx(t, tt.args...)
		if err == nil {
			t.Errorf("arbor %s succeeded:\n%s", strings.Join(tt.args, " "), out)
			continue
		}
		all := out + err.Error()
		for _, w := range tt.want {
			if !strings.Contains(all, w) {
				t.Errorf("arbor %s = %q, want it to say %q", strings.Join(tt.args, " "), all, w)
			}
		}
		if tt.notWant != "" && strings.Contains(all, tt.notWant) {
			t.Errorf("arbor %s = %q, which names %s the command does not take", strings.Join(tt.args, " "), all, tt.notWant)
		}
	}
}
