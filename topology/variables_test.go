package topology

import (
	"fmt"
	"strings"
	"testing"
)

// A value for a variable the file does not declare is an error whether it
// comes from --var or from ARBOR_VAR_NAME: the same summary at the same
// place (the first variable block, or the file's start without one), with
// the variables the file declares.
func TestUndeclaredVariable(t *testing.T) {
	const withVars = `trust_domain = "example.org"

variable "region" {
  default = "eu"
}
variable "ca_ttl" {
  default = "48h"
}
server "root" {
  ca_ttl = var.ca_ttl
}
`
	const withoutVars = `trust_domain = "example.org"
server "root" {}
`
	env := func(kv ...string) Options {
		var list []string
		for i := 0; i+1 < len(kv); i += 2 {
			list = append(list, kv[i]+"="+kv[i+1])
		}
		return Options{LookupEnv: envOf(kv...), Environ: func() []string { return list }}
	}
	flag := func(name, value string) Options {
		o := env()
		o.Vars = map[string]string{name: value}
		return o
	}
	tests := []struct {
		name    string
		src     string
		opts    Options
		wantPos string // line:col
		want    []string
	}{
		{"--var", withVars, flag("regoin", "us"), "3:1",
			[]string{`--var regoin= gives a value for variable "regoin", but topology.hcl declares no variable "regoin"`, "It declares ca_ttl (line 6), region (line 3).", `Did you mean "region"?`}},
		{"ARBOR_VAR_", withVars, env("ARBOR_VAR_regoin", "us"), "3:1",
			[]string{`the environment variable ARBOR_VAR_regoin gives a value for variable "regoin", but topology.hcl declares no variable "regoin"`, "It declares ca_ttl (line 6), region (line 3).", `Did you mean "region"?`}},
		{"--var, no variables", withoutVars, flag("region", "us"), "1:1",
			[]string{`--var region= gives a value for variable "region"`, "It declares no variables."}},
		{"ARBOR_VAR_, no variables", withoutVars, env("ARBOR_VAR_region", "us"), "1:1",
			[]string{`the environment variable ARBOR_VAR_region gives a value for variable "region"`, "It declares no variables."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := ParseWith([]byte(tt.src), testPath, tt.opts)
			if len(diags) != 1 || diags[0].Summary != "Undeclared variable" {
				t.Fatalf("ParseWith() = %s, want one Undeclared variable", FormatDiagnostics(diags, nil))
			}
			d := diags[0]
			if pos := fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column); d.Subject.Filename != testPath || pos != tt.wantPos {
				t.Errorf("Undeclared variable at %s:%s, want %s:%s", d.Subject.Filename, pos, testPath, tt.wantPos)
			}
			for _, w := range tt.want {
				if !strings.Contains(d.Detail, w) {
					t.Errorf("detail %q does not say %q", d.Detail, w)
				}
			}
		})
	}

	// A declared variable from the environment, and other environment
	// variables, are no error.
	if _, diags := ParseWith([]byte(withVars), testPath, env("ARBOR_VAR_region", "us", "HOME", "/root", "ARBOR_VARX", "1")); len(diags) != 0 {
		t.Errorf("ParseWith(ARBOR_VAR_region) = %s, want no diagnostics", FormatDiagnostics(diags, nil))
	}
}

// The zero Options read the process environment, ARBOR_VAR_* included.
func TestUndeclaredVariableFromProcessEnvironment(t *testing.T) {
	t.Setenv("ARBOR_VAR_nowhere", "1")
	_, diags := Parse([]byte("trust_domain = \"example.org\"\nserver \"root\" {}\n"), testPath)
	if len(diags) != 1 || diags[0].Summary != "Undeclared variable" || !strings.Contains(diags[0].Detail, "ARBOR_VAR_nowhere") {
		t.Errorf("Parse() with ARBOR_VAR_nowhere set = %s, want Undeclared variable", FormatDiagnostics(diags, nil))
	}
}
