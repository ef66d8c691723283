// Package soak runs a whole arbor tree of real processes (root, two
// regional tiers, two leaves under each, every downstream server with its
// co-located agent, a workload agent on every leaf) under load while a
// chaos loop SIGKILLs one random server or agent every few seconds and
// restarts it on the same state, and checks that nothing an operator
// relies on breaks: workloads' SVIDs stay valid, acknowledged writes
// survive, no agent attests again, every tier recovers by itself.
package soak
