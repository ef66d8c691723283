package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The calls below return values instead of printing: they are what programs
// built on the admin socket use (`topology apply`, `arbor up`), with the
// same timeouts and errors as the commands.

// CreateEntry creates one entry and returns it as stored.
func (c *Client) CreateEntry(ctx context.Context, e *types.Entry) (*types.Entry, error) {
	const op = "entry create"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.entry.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		return nil, c.rpcError(op, err)
	}
	if len(resp.Results) != 1 {
		return nil, fmt.Errorf("%s: the server answered %d results for one entry", op, len(resp.Results))
	}
	r := resp.Results[0]
	if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
		return nil, &RPCError{Op: op, Code: code, Message: r.GetStatus().GetMessage()}
	}
	return r.Entry, nil
}

// UpdateEntry replaces the entry with e's ID (every field).
func (c *Client) UpdateEntry(ctx context.Context, e *types.Entry) error {
	const op = "entry update"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.entry.BatchUpdateEntry(ctx, &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		return c.rpcError(op, err)
	}
	if len(resp.Results) != 1 {
		return fmt.Errorf("%s: the server answered %d results for one entry", op, len(resp.Results))
	}
	if code := codes.Code(resp.Results[0].GetStatus().GetCode()); code != codes.OK {
		return &RPCError{Op: op, Code: code, Message: resp.Results[0].GetStatus().GetMessage()}
	}
	return nil
}

// CreateJoinToken creates a join token valid for ttl whose agent alias is
// alias, and returns its value.
func (c *Client) CreateJoinToken(ctx context.Context, alias spiffeid.ID, ttl time.Duration) (string, error) {
	const op = "token generate"
	if ttl < time.Second {
		return "", fmt.Errorf("%s: ttl %v is shorter than a second", op, ttl)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	jt, err := c.agent.CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: int32(ttl / time.Second), AgentId: idProto(alias)})
	if err != nil {
		return "", c.rpcError(op, err)
	}
	return jt.Value, nil
}

// Bundle returns the server's own trust bundle.
func (c *Client) Bundle(ctx context.Context) (*types.Bundle, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	b, err := c.bundle.GetBundle(ctx, &bundlev1.GetBundleRequest{})
	return b, c.rpcError("bundle show", err)
}

// Serving returns nil when the server's health service says SERVING.
func (c *Client) Serving(ctx context.Context) error {
	const op = "healthcheck"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return c.rpcError(op, err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s: %w: health status %s", op, ErrUnhealthy, resp.Status)
	}
	return nil
}

// Counts returns how many agents and entries the server holds.
func (c *Client) Counts(ctx context.Context) (agents, entries int32, err error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	a, aerr := c.agent.CountAgents(ctx, &agentv1.CountAgentsRequest{})
	e, eerr := c.entry.CountEntries(ctx, &entryv1.CountEntriesRequest{})
	if err := errors.Join(c.rpcError("agent count", aerr), c.rpcError("entry count", eerr)); err != nil {
		return 0, 0, err
	}
	return a.Count, e.Count, nil
}
