package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Healthcheck checks a running agent: with healthAddr, its /ready endpoint;
// otherwise its Workload API socket, which is healthy when it answers
// (PermissionDenied "no identity issued" included: the caller simply has no
// entry). It returns nil when healthy.
func Healthcheck(ctx context.Context, healthAddr, socketPath string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if healthAddr != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+healthAddr+"/ready", nil)
		if err != nil {
			return fmt.Errorf("agent: healthcheck: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("agent: healthcheck: %w", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("agent: not ready: %s", strings.TrimSpace(string(body)))
		}
		return nil
	}
	if socketPath == "" {
		return errors.New("agent: healthcheck needs a health address or a socket path")
	}
	cc, err := grpc.NewClient("unix://"+socketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("agent: healthcheck: %w", err)
	}
	defer cc.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	stream, err := workload.NewSpiffeWorkloadAPIClient(cc).FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	switch status.Code(err) {
	case codes.OK, codes.PermissionDenied:
		return nil
	}
	return fmt.Errorf("agent: workload API at %s: %w", socketPath, err)
}
