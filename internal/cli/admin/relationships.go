package admin

import (
	"context"
	"fmt"

	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
)

// Federation relationships as values, for `arbor topology apply`: what a
// server holds, and one relationship created or updated at a time with the
// server's refusal as an *RPCError.

// relationshipSettings is the mask of a relationship without its trust
// domain's bundle: what a relationship says, not what is held of it.
var relationshipSettings = &types.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true}

// Relationships lists every federation relationship the server holds,
// without the trust domains' bundles.
func (c *Client) Relationships(ctx context.Context) ([]*types.FederationRelationship, error) {
	const op = "federation list"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var all []*types.FederationRelationship
	token := ""
	for {
		resp, err := c.td.ListFederationRelationships(ctx, &trustdomainv1.ListFederationRelationshipsRequest{
			PageSize: pageSize, PageToken: token, OutputMask: relationshipSettings})
		if err != nil {
			return nil, c.rpcError(op, err)
		}
		all = append(all, resp.FederationRelationships...)
		if resp.NextPageToken == "" {
			return all, nil
		}
		if resp.NextPageToken == token {
			return nil, fmt.Errorf("%s: the server returned the same page token %q twice", op, token)
		}
		token = resp.NextPageToken
	}
}

// CreateRelationship creates r; r.TrustDomainBundle, when set, is stored as
// that trust domain's bundle.
func (c *Client) CreateRelationship(ctx context.Context, r *types.FederationRelationship) error {
	const op = "federation create"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.td.BatchCreateFederationRelationship(ctx, &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{r}, OutputMask: relationshipSettings})
	if err != nil {
		return c.rpcError(op, err)
	}
	if len(resp.Results) != 1 {
		return fmt.Errorf("%s: the server answered %d results for one relationship", op, len(resp.Results))
	}
	return resultError(op, resp.Results[0].GetStatus())
}

// UpdateRelationship replaces the endpoint URL and profile of the
// relationship with r's trust domain, and its bundle when
// r.TrustDomainBundle is set (a relationship updated without one keeps the
// bundle held).
func (c *Client) UpdateRelationship(ctx context.Context, r *types.FederationRelationship) error {
	const op = "federation update"
	mask := &types.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true, TrustDomainBundle: r.TrustDomainBundle != nil}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.td.BatchUpdateFederationRelationship(ctx, &trustdomainv1.BatchUpdateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{r}, InputMask: mask, OutputMask: relationshipSettings})
	if err != nil {
		return c.rpcError(op, err)
	}
	if len(resp.Results) != 1 {
		return fmt.Errorf("%s: the server answered %d results for one relationship", op, len(resp.Results))
	}
	return resultError(op, resp.Results[0].GetStatus())
}

// resultError is a batch item's status as an error; nil when it is OK.
func resultError(op string, st *types.Status) error {
	if code := codes.Code(st.GetCode()); code != codes.OK {
		return &RPCError{Op: op, Code: code, Message: st.GetMessage()}
	}
	return nil
}
