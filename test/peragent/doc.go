// Package peragent tests one agent authorized for many entries (issue 18's
// "no per-agent cliff"): an in-process arbor server holds N entries, all
// parented to one node alias, and both the arbor agent and a real
// spire-agent attested to that alias sync every entry and hold an
// X509-SVID for each, past the ~17k entries (~7.5k with 4 selectors) at
// which one unpaged sync message outgrows gRPC's 4 MB limit. The size is
// ARBOR_PERAGENT_ENTRIES (CI: 20000); docs/perf/peragent.md has the
// figures at 100k.
package peragent
