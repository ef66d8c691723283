// Package jointoken attests agents that present a single-use join token, the
// bootstrap secret an administrator generates on a server tier (SPIRE's
// "join_token" attestation type). The token is consumed by the server when it
// stores the attested node, in the same transaction, so it is used once.
package jointoken

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/nodeattest"
)

// Type is the attestation data type of join tokens.
const Type = "join_token"

// Config configures an Attestor. It must not be modified after New.
type Config struct {
	// TrustDomain is the server's trust domain; required.
	TrustDomain spiffeid.TrustDomain
	// Tokens holds the join tokens; required.
	Tokens datastore.TokenStore
	// Now returns the current time; if nil, time.Now is used.
	Now func() time.Time
}

// Attestor verifies join tokens. The payload an agent sends is the token
// itself (the bytes of the string, no framing) and no challenge is exchanged.
type Attestor struct {
	td     spiffeid.TrustDomain
	tokens datastore.TokenStore
	now    func() time.Time
}

var _ nodeattest.Attestor = (*Attestor)(nil)

// New returns an Attestor for c.
func New(c Config) (*Attestor, error) {
	if c.TrustDomain.IsZero() {
		return nil, errors.New("jointoken: trust domain is required")
	}
	if c.Tokens == nil {
		return nil, errors.New("jointoken: token store is required")
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	return &Attestor{td: c.TrustDomain, tokens: c.Tokens, now: now}, nil
}

// Type returns "join_token".
func (a *Attestor) Type() string { return Type }

// Attest checks the token in payload and returns the agent ID
// spiffe://<trust domain>/spire/agent/join_token/<token>, with the token in
// Result.JoinToken for the server to consume when it stores the node. Like
// SPIRE, it produces no selectors and the agent cannot re-attest (the token
// will be gone). An empty or malformed token is ErrInvalid; an unknown,
// already used or expired token is ErrDenied (an expired one is left for
// pruning). Error messages never contain the token.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	token := string(payload)
	if token == "" {
		return nil, fmt.Errorf("jointoken: %w: empty token", nodeattest.ErrInvalid)
	}
	// The token becomes a path segment of the agent ID; one that cannot be
	// is rejected before it is looked up, so it consumes nothing.
	agentID, err := AgentID(a.td, token)
	if err != nil {
		return nil, fmt.Errorf("jointoken: %w: token is not a valid SPIFFE ID path segment", nodeattest.ErrInvalid)
	}
	jt, err := a.tokens.FetchJoinToken(ctx, token)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return nil, fmt.Errorf("jointoken: %w: %w", nodeattest.ErrDenied, ErrTokenUsed)
	case err != nil:
		return nil, fmt.Errorf("jointoken: reading token: %w", err)
	}
	// SPIRE rejects a token whose expiry is strictly before now; the same
	// instant is still valid.
	if jt.ExpiresAt.Before(a.now()) {
		return nil, fmt.Errorf("jointoken: %w: token expired at %s", nodeattest.ErrDenied, jt.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return &nodeattest.Result{AgentID: agentID, JoinToken: token}, nil
}

// ErrTokenUsed is the reason (wrapped in ErrDenied) for a token that does not
// exist or was already used; the server returns it too when the token is gone
// by the time it stores the node.
var ErrTokenUsed = errors.New("token does not exist or was already used")

// AgentID returns the agent ID a join token attests:
// spiffe://<td>/spire/agent/join_token/<token>. It is also the parent ID of
// the node-alias entry created for a token generated with a SPIFFE ID.
func AgentID(td spiffeid.TrustDomain, token string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "spire", "agent", Type, token)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("jointoken: agent ID: %w", err)
	}
	return id, nil
}
