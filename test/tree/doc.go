// Package tree runs a generated tree of real arbor processes under `arbor
// up` — a root, R regional servers and L leaves under each, every downstream
// server with its co-located agent — and checks what a large tree must
// keep: every leaf serves, a workload under a leaf holds an SVID chaining to
// the root, JWT keys rotated at the root and at a regional reach every
// tier, and every tier's bundle stays bounded as keys rotate and servers
// restart. ARBOR_TREE=RxL selects the size (default 3x2); see
// docs/perf/tree.md for the full-size run.
package tree
