package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/arborid/arbor/topology"
)

// topologyVars is the --var NAME=VALUE flag of every command that loads a
// topology file.
type topologyVars []string

func addVarFlag(cmd *cobra.Command, v *topologyVars) {
	cmd.Flags().StringArrayVar((*[]string)(v), "var", nil, "set a topology variable: --var NAME=VALUE (repeatable; wins over ARBOR_VAR_NAME)")
}

func (v topologyVars) options() (topology.Options, error) {
	opts := topology.Options{Vars: map[string]string{}}
	for _, kv := range v {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return opts, fmt.Errorf("--var %q: want NAME=VALUE", kv)
		}
		opts.Vars[name] = value
	}
	return opts, nil
}

// readTopology reads the topology file at path, given as from says; when
// it cannot, the error names the flag or argument to fix.
func readTopology(path, from string) ([]byte, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the topology file given as %s: %v", from, err)
	}
	return src, nil
}

// fileArg is the Args of the commands that take one topology FILE: a
// missing or extra argument is refused naming FILE.
func fileArg(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return fmt.Errorf("missing FILE, the topology file to read; usage: %s", cmd.UseLine())
	case len(args) > 1:
		return fmt.Errorf("one FILE only, the topology file to read, not %d arguments (%s); usage: %s", len(args), strings.Join(args, " "), cmd.UseLine())
	}
	return nil
}

// parseTopology parses the topology file at path, given as from says (the
// flag or argument that named it: "--topology", "FILE"), with the values of
// --var, for the commands that run what it describes (arbor server, arbor
// up, arbor agent run). Its errors come back as one error that holds every
// diagnostic with its source line; warnings are dropped (arbor topology
// validate shows them).
func parseTopology(path, from string, vars topologyVars) (*topology.File, error) {
	opts, err := vars.options()
	if err != nil {
		return nil, err
	}
	src, err := readTopology(path, from)
	if err != nil {
		return nil, err
	}
	f, diags := topology.ParseWith(src, path, opts)
	if diags.HasErrors() {
		return nil, fmt.Errorf("invalid topology:\n%s", topology.FormatDiagnostics(diags, map[string]*hcl.File{path: {Bytes: src}}))
	}
	return f, nil
}

// parseTopologyFiles is parseTopology for each topology FILE argument of a
// command that takes several (arbor up, arbor status, arbor logs).
func parseTopologyFiles(paths []string, vars topologyVars) ([]*topology.File, error) {
	files := make([]*topology.File, 0, len(paths))
	for _, path := range paths {
		f, err := parseTopology(path, "FILE", vars)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}
