// Package nested holds end-to-end tests of nested tiers: real in-process
// arbor servers (root, regional, leaf) on loopback, each downstream tier
// authenticated to its parent through a co-located arbor agent's Workload API,
// workload agents on Unix sockets and go-spiffe clients. It has no code
// outside its tests.
package nested
