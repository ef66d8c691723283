// Package nodeattest defines how a server tier verifies the identity of a node
// whose agent calls agent.v1 AttestAgent: one Attestor per attestation type
// (subpackages jointoken and x509pop), each turning the agent's payload, and
// any challenge-response exchange, into the agent's SPIFFE ID and selectors.
//
// The wire formats are SPIRE's, so a real spire-agent with the same-named
// NodeAttestor plugin attests to an arbor server unchanged.
package nodeattest

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/selector"
)

// Errors an Attestor returns (wrapped) so the API layer can choose a status
// with errors.Is. Any other error is an internal failure (a datastore outage,
// a broken stream) whose text must not reach the remote caller.
var (
	// ErrInvalid: the payload or challenge response is malformed
	// (InvalidArgument).
	ErrInvalid = errors.New("invalid attestation data")
	// ErrDenied: the data is well formed but does not prove an identity this
	// server accepts — an unknown, used or expired join token, an untrusted or
	// expired certificate, a wrong signature (PermissionDenied).
	ErrDenied = errors.New("attestation denied")
)

// ChallengeFunc sends challenge to the attesting agent and returns the agent's
// response. Errors it returns are passed through by Attest unchanged (wrapped).
type ChallengeFunc func(ctx context.Context, challenge []byte) (response []byte, err error)

// Attestor verifies one node attestation type on the server. Implementations
// are safe for concurrent use.
type Attestor interface {
	// Type is the attestation data type it handles, as sent by the agent in
	// types.AttestationData.Type ("join_token", "x509pop").
	Type() string
	// Attest verifies payload, exchanging challenges with the agent through
	// challenge when the type calls for proof of possession.
	Attest(ctx context.Context, payload []byte, challenge ChallengeFunc) (*Result, error)
}

// Result is the identity an attestation proved.
type Result struct {
	// AgentID is the agent's SPIFFE ID, under /spire/agent/ of the server's
	// trust domain.
	AgentID spiffeid.ID
	// Selectors describe the node; their Type is the attestor's Type.
	Selectors []selector.Selector
	// CanReattest reports whether the agent can attest again with the same
	// data (x509pop) instead of needing a fresh secret (join_token).
	CanReattest bool
	// FirstUse makes the attestation trust on first use: the server refuses
	// it (PermissionDenied) when a node with AgentID is already attested,
	// checked in the transaction that stores the node, so one instance
	// identity document attests one agent until that agent is evicted
	// (aws_iid, gcp_iit, azure_msi, as SPIRE).
	FirstUse bool
	// JoinToken, when not empty, is a single-use secret the attestation
	// rests on. The attestor only checked it; the server consumes it in the
	// transaction that stores the node (datastore.NodeStore.AttestNode), so
	// an attestation that fails after this point leaves it usable and of
	// concurrent attestations with it exactly one succeeds.
	JoinToken string
}
