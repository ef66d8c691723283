// Package scale holds the tests that run one arbor server with many
// registration entries as its own process: loading them through the admin
// API, the memory they take, a crash and the start-up after it, and one
// agent's sync cost as the total grows.
//
// CI runs the small form; the full form is one command (see docs/perf/
// million-entries.md):
//
//	ARBOR_SCALE_ENTRIES=1000000 go test ./test/scale -run TestEntriesAtScale -v -timeout 60m
package scale
