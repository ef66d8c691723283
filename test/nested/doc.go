// Package nested holds end-to-end tests of nested trees of in-process arbor
// servers on loopback. Most run a root, regional and leaf tier, each
// downstream tier authenticated to its parent through a co-located arbor
// agent's Workload API, with workload agents on Unix sockets and go-spiffe
// clients (harness_test.go). The wide tree — one root, eight regional tiers
// and a leaf under each, linked without co-located agents and each with a
// clock the test moves (wide_tree_harness_test.go) — holds properties that
// only show with many sibling subtrees, such as every tier's bundle
// converging on the same JWT authorities after any tier rotates its key. It
// has no code outside its tests.
package nested
