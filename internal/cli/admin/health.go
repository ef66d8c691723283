package admin

import (
	"context"
	"errors"
	"fmt"

	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ErrUnhealthy is wrapped by Healthcheck's errors when the server answers
// but is not healthy.
var ErrUnhealthy = errors.New("server is unhealthy")

// Healthcheck asks the server's gRPC health service whether it serves and,
// unless shallow, also that it can read its datastore (CountBundles) and has
// a trust bundle with an X.509 authority (GetBundle). It prints "Server is
// healthy." (verbose adds each step) or returns a one-line error.
func (c *Client) Healthcheck(ctx context.Context, p Printer, shallow, verbose bool) error {
	const op = "healthcheck"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	step := func(format string, args ...any) {
		if verbose && !p.JSON() {
			fmt.Fprintf(p.Out, format+"\n", args...)
		}
	}
	step("Checking the health service on %s...", c.socket)
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return c.rpcError(op, err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s: %w: health status %s", op, ErrUnhealthy, resp.Status)
	}
	if !shallow {
		step("Checking the datastore...")
		if _, err := c.bundle.CountBundles(ctx, &bundlev1.CountBundlesRequest{}); err != nil {
			return fmt.Errorf("%s: %w: datastore: %v", op, ErrUnhealthy, c.rpcError("CountBundles", err))
		}
		step("Checking the trust bundle...")
		b, err := c.bundle.GetBundle(ctx, &bundlev1.GetBundleRequest{})
		if err != nil {
			return fmt.Errorf("%s: %w: trust bundle: %v", op, ErrUnhealthy, c.rpcError("GetBundle", err))
		}
		if len(b.X509Authorities) == 0 {
			return fmt.Errorf("%s: %w: the trust bundle has no X.509 authority", op, ErrUnhealthy)
		}
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	fmt.Fprintln(p.Out, "Server is healthy.")
	return nil
}
