// Package agent is arbor's node agent, the process at the bottom of every
// tier: it attests its node to a server of the tier (join_token or x509pop
// over SPIRE's agent.v1 API), keeps the node's authorized registration
// entries, X509-SVIDs and trust bundles in an in-memory cache that it renews
// at half life, and serves them to workloads through the SPIFFE Workload API
// on a Unix socket. Workloads keep receiving cached SVIDs while the server is
// unreachable; the agent reconnects with capped, jittered backoff.
//
// The agent speaks the same protocol as spire-agent v1.13, so it attests to
// an arbor server or to a real spire-server alike.
package agent
