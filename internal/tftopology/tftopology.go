// Package tftopology holds the Terraform data sources that read a topology
// file at plan time, with no server: arbor_topology (the tree, each tier's
// outage budget, warnings; an invalid file fails the plan with the
// topology's file:line:col diagnostics) and arbor_tier_config (one node's
// rendered server and agent configuration).
package tftopology

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	tfpath "github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/arborid/arbor/topology"
)

// DataSources lists the topology data sources.
func DataSources() []func() datasource.DataSource {
	return []func() datasource.DataSource{
		func() datasource.DataSource { return &topologyDataSource{} },
		func() datasource.DataSource { return &tierConfigDataSource{} },
	}
}

// Descriptions shared by both data sources.
const (
	pathDescription = "The topology file (docs/topology.md). A relative path is relative to the directory tofu or " +
		"terraform runs in (the root module's), not to the module that reads it: write \"${path.module}/FILE\" for a " +
		"file beside the module. Relative paths inside the file (state_dir, admin_socket, ...) are relative to the " +
		"file's directory, as for `arbor topology`. Files ending in .json are read as HCL's JSON syntax."
	varsDescription = "Values of the file's variables by name, as `arbor topology --var NAME=VALUE` gives them: " +
		"they win over ARBOR_VAR_NAME environment variables of the provider process and over the variables' " +
		"defaults. A name the file does not declare is an error."
)

// loaded is a parsed topology file with what the data sources report
// besides its values.
type loaded struct {
	file *topology.File
	// src is the file's text.
	src []byte
	// warnings are the file's warnings as `arbor topology validate` prints
	// them, one element per warning.
	warnings []string
}

// load reads and parses the topology file at path exactly as the arbor
// topology commands do (variables from vars, files the topology names
// checked for existence), and adds one framework diagnostic per topology
// diagnostic to diags. It returns nil when the file cannot be used.
func load(path string, vars map[string]string, diags *diag.Diagnostics) *loaded {
	src, err := os.ReadFile(path)
	if err != nil {
		diags.AddAttributeError(tfpath.Root("path"), "cannot read topology file "+path, fmt.Sprintf("%v. A relative path is relative to the "+
			"directory tofu runs in (the root module's); write \"${path.module}/FILE\" for a file beside the module.", err))
		return nil
	}
	f, hdiags := topology.ParseWith(src, path, topology.Options{Vars: vars, CheckFiles: true})
	addDiagnostics(diags, hdiags, src, path)
	if hdiags.HasErrors() {
		return nil
	}
	return &loaded{file: f, src: src, warnings: warningTexts(hdiags)}
}

// addDiagnostics turns topology diagnostics into framework ones: the
// summary is file:line:col: summary, the detail the diagnostic as `arbor
// topology validate` prints it (with the offending source line).
func addDiagnostics(diags *diag.Diagnostics, hdiags hcl.Diagnostics, src []byte, path string) {
	files := map[string]*hcl.File{path: {Bytes: src}}
	for _, d := range hdiags {
		summary := d.Summary
		if d.Subject != nil {
			summary = fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary)
		}
		detail := strings.TrimRight(topology.FormatDiagnostics(hcl.Diagnostics{d}, files), "\n")
		// On the path attribute, so that tofu shows the line naming the file.
		if d.Severity == hcl.DiagError {
			diags.AddAttributeError(tfpath.Root("path"), summary, detail)
		} else {
			diags.AddAttributeWarning(tfpath.Root("path"), summary, detail)
		}
	}
}

// warningTexts is each warning of hdiags as `arbor topology validate`
// prints it, without the source line.
func warningTexts(hdiags hcl.Diagnostics) []string {
	out := []string{}
	for _, d := range hdiags {
		if d.Severity == hcl.DiagWarning {
			out = append(out, strings.TrimRight(topology.FormatDiagnostics(hcl.Diagnostics{d}, nil), "\n"))
		}
	}
	return out
}

// varsOf reads the vars attribute: nil when unset.
func varsOf(ctx context.Context, m types.Map, diags *diag.Diagnostics) map[string]string {
	if m.IsNull() || m.IsUnknown() {
		return nil
	}
	var vals map[string]types.String
	diags.Append(m.ElementsAs(ctx, &vals, false)...)
	if diags.HasError() {
		return nil
	}
	out := make(map[string]string, len(vals))
	for name, v := range vals {
		if v.IsNull() {
			diags.AddAttributeError(tfpath.Root("vars").AtMapKey(name), "invalid vars", fmt.Sprintf("vars[%q] is null: give the variable a value or leave it out", name))
			continue
		}
		out[name] = v.ValueString()
	}
	return out
}
