// Package defaults holds the values a setting takes when nothing sets it,
// where the topology file, the server, its CA and its API, and the agent all
// read them: one home for each. They are SPIRE's defaults wherever SPIRE has
// the same setting, so a tree behaves alike whichever implementation runs a
// tier.
package defaults

import "time"

const (
	// CATTL is the lifetime of a tier's X.509 CA and JWT key (SPIRE's
	// ca_ttl).
	CATTL = 24 * time.Hour
	// X509SVIDTTL is the lifetime of a workload's X509-SVID (SPIRE's
	// default_x509_svid_ttl).
	X509SVIDTTL = time.Hour
	// JWTSVIDTTL is the lifetime of a JWT-SVID (SPIRE's
	// default_jwt_svid_ttl).
	JWTSVIDTTL = 5 * time.Minute
	// AgentSVIDTTL is the lifetime of an agent's SVID (SPIRE's
	// agent_ttl, which defaults to the X509-SVID TTL).
	AgentSVIDTTL = X509SVIDTTL
	// JoinTokenTTL is how long a join token stays valid when the request
	// does not say (`spire-server token generate`'s default).
	JoinTokenTTL = 10 * time.Minute
	// SyncInterval is how often an agent syncs entries and bundles with its
	// server (spire-agent's).
	SyncInterval = 5 * time.Second
)
