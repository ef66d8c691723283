// Package e2e holds end-to-end tests that run the arbor binary as a real
// server process with real SPIRE v1.13.3 peers (spire-agent attesting to it,
// the spire-server CLI administering it over its admin socket) and go-spiffe
// workloads fetching SVIDs through the agent. It has no non-test code.
package e2e
