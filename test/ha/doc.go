// Package ha tests arbor's high availability with real processes: several
// arbor server replicas of one tier on one PostgreSQL, killed with SIGKILL
// and restarted under load, with simulated agents (test/load/loadgen), real
// arbor agents, a real spire-agent and go-spiffe workloads watching what
// the outages cost. The tests report failover times and issuance with one
// replica against three; they assert what must hold (no failed Workload API
// fetch, no expired SVID, no re-attestation, nothing lost), never a timing.
package ha
