// Package topology reads the topology file: the one HCL document that
// describes every server tier of a trust domain (root, regional, leaf) and
// how they nest. `arbor server --topology FILE --node NAME` runs the server
// block NAME of such a file.
//
// A minimal file:
//
//	trust_domain = "example.org"
//
//	defaults {
//	  x509_svid_ttl = "1h"    # inherited by every server that does not set it
//	}
//
//	server "root" {
//	  listen = "127.0.0.1:8081"
//	  ca_ttl = "7d"
//	  datastore "sqlite" {}
//	  node_attestor "join_token" {}
//	}
//
// Every value is resolved when the file is parsed: each server's settings
// come from its own block, else from the defaults block, else from the
// built-in defaults (the Default* constants); relative paths (state_dir,
// admin_socket, datastore "sqlite" path, the attestors' PEM files,
// kubeconfig and token paths, and file() arguments) are relative to the
// directory holding the topology file, and a
// server's state directory defaults to .arbor/<file-stem>/NAME in that
// directory (StateRoot), so that files side by side never share state.
//
// Expressions may call env("NAME") or env("NAME", "fallback"),
// file("path") and trimspace(s). Durations are Go durations ("90m", "1h30m")
// optionally led by days ("7d", "1d12h").
//
// Problems come back as hcl.Diagnostics, each with the file:line:col it
// concerns, a summary and a detail saying how to fix it; unknown attributes
// and blocks are diagnostics too. FormatDiagnostics prints them.
//
// Expressions may also read var.NAME, declared by variable blocks and set
// with Options.Vars, ARBOR_VAR_NAME or the block's default.
//
// The language is declared in one place, schema.go: trust_domain, variable,
// defaults, server blocks (datastore, upstream, node_attestor, agent, entry)
// and federation blocks; docs/topology.md is its reference. Parsing runs
// every check of the tree too (validate.go). On a parsed File, NewPlan,
// Render, RenderSPIRE (the server.conf/agent.conf of a tier running real
// SPIRE), WriteGraph (DOT, Mermaid or a native SVG) and Simulate compute
// what `arbor topology` prints.
package topology
