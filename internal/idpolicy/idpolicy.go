// Package idpolicy holds the rules a SPIFFE ID must follow in each role it
// plays on a server (a registration entry's SPIFFE ID or parent, a join
// token's alias, an agent), the same rules SPIRE 1.13's server API applies.
package idpolicy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The reasons an ID is refused. Every error of this package wraps one of
// them.
var (
	// ErrMissing is a zero ID: the request named none.
	ErrMissing = errors.New("missing SPIFFE ID")
	// ErrForeignTrustDomain is an ID outside the server's trust domain.
	ErrForeignTrustDomain = errors.New("not a member of trust domain")
	// ErrEmptyPath is the trust domain's own ID (spiffe://td), which names no
	// workload and which go-spiffe refuses in an X509-SVID.
	ErrEmptyPath = errors.New("path is empty: the ID names the trust domain, not a member of it")
	// ErrReservedPath is a path in /spire, the namespace of SPIRE servers
	// (/spire/server) and agents (/spire/agent/...).
	ErrReservedPath = errors.New("path is in the /spire namespace, reserved for servers and agents")
	// ErrNotAgentPath is a path outside the agent namespace /spire/agent/.
	ErrNotAgentPath = errors.New("path is not in the agent namespace /spire/agent/")
)

// ReservedPrefix is the path under which servers and agents are named.
const ReservedPrefix = "/spire"

// ServerPath is the path of every server's SPIFFE ID.
const ServerPath = ReservedPrefix + "/server"

// ServerID returns spiffe://<td>/spire/server, the SPIFFE ID of every server
// of td: its TLS certificate carries it and agents and child tiers verify it
// (the zero ID for the zero trust domain).
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromPath(td, ServerPath)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// agentPrefix starts every agent ID path.
const agentPrefix = ReservedPrefix + "/agent/"

// Member checks that id is a member of td with a non-empty path: what a
// registration entry's parent ID must be (SPIRE's
// VerifyTrustDomainMemberID). Servers and agents are members, so
// spiffe://td/spire/server and spiffe://td/spire/agent/... are accepted.
func Member(td spiffeid.TrustDomain, id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return ErrMissing
	case td.IsZero() || !id.MemberOf(td):
		return fmt.Errorf("%q: %w %q", id, ErrForeignTrustDomain, td.Name())
	case id.Path() == "":
		return fmt.Errorf("%q: %w", id, ErrEmptyPath)
	}
	return nil
}

// ParentID checks the parent ID of a registration entry. It is Member.
func ParentID(td spiffeid.TrustDomain, id spiffeid.ID) error { return Member(td, id) }

// WorkloadID checks the SPIFFE ID of a registration entry (downstream ones
// included) and the alias of a join token: a member of td whose path is not
// in the /spire namespace (SPIRE's VerifyTrustDomainWorkloadID).
func WorkloadID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	if err := Member(td, id); err != nil {
		return err
	}
	if IsReservedPath(id.Path()) {
		return fmt.Errorf("%q: %w", id, ErrReservedPath)
	}
	return nil
}

// AgentID checks the ID of an agent: a member of td whose path is under
// /spire/agent/ (SPIRE's VerifyTrustDomainAgentID).
func AgentID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	if err := Member(td, id); err != nil {
		return err
	}
	if !IsAgentPath(id.Path()) {
		return fmt.Errorf("%q: %w", id, ErrNotAgentPath)
	}
	return nil
}

// IsReservedPath reports whether path is /spire or below it.
func IsReservedPath(path string) bool {
	return path == ReservedPrefix || strings.HasPrefix(path, ReservedPrefix+"/")
}

// IsAgentPath reports whether path is below /spire/agent/.
func IsAgentPath(path string) bool {
	return strings.HasPrefix(path, agentPrefix)
}
