package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// Federated bundles as values, for programs that federate trust domains they
// run themselves (`arbor up` with several topology files).

// FederatedBundle returns the bundle of trust domain td the server holds,
// or nil (and no error) when it holds none.
func (c *Client) FederatedBundle(ctx context.Context, td spiffeid.TrustDomain) (*types.Bundle, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	b, err := c.bundle.GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, c.rpcError("bundle list", err)
	}
	return b, nil
}

// SetFederatedBundle creates or replaces the federated bundle of b's trust
// domain with b.
func (c *Client) SetFederatedBundle(ctx context.Context, b *types.Bundle) error {
	const op = "bundle set"
	if b == nil || b.TrustDomain == "" {
		return errors.New(op + ": the bundle names no trust domain")
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.bundle.BatchSetFederatedBundle(ctx, &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{b}})
	if err != nil {
		return c.rpcError(op, err)
	}
	if len(resp.Results) != 1 {
		return fmt.Errorf("%s: the server answered %d results for one bundle", op, len(resp.Results))
	}
	if st := resp.Results[0].GetStatus(); codes.Code(st.GetCode()) != codes.OK {
		return &RPCError{Op: op, Code: codes.Code(st.GetCode()), Message: st.GetMessage()}
	}
	return nil
}

// RefreshBundle asks the server to fetch the bundle of td from its
// federation relationship's endpoint now. A fetch that fails is an
// *RPCError with the server's reason (code Unavailable when the endpoint
// could not be fetched), told apart from an admin socket that does not
// answer (ErrUnreachable).
func (c *Client) RefreshBundle(ctx context.Context, td spiffeid.TrustDomain) error {
	const op = "federation refresh"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	_, err := c.td.RefreshBundle(ctx, &trustdomainv1.RefreshBundleRequest{TrustDomain: td.Name()})
	if err == nil {
		return nil
	}
	// The server answers Unavailable when the foreign endpoint fails, the
	// code gRPC also gives a socket nobody answers on; a connection still
	// ready after the call means the server answered.
	if st, _ := status.FromError(err); st.Code() == codes.Unavailable && c.conn.GetState() == connectivity.Ready {
		return &RPCError{Op: op, Code: st.Code(), Message: st.Message()}
	}
	return c.rpcError(op, err)
}
