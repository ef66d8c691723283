package gcpiit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"
)

// maxComputeResponse bounds an instances.get answer: instance metadata is
// at most 512 KB, and the rest of an instance a few KB.
const maxComputeResponse = 4 << 20

// computeClient reads instances from the Compute API. The service is built
// on first use, not by New, so that a server whose credentials are not yet
// in place starts, and it is built again after a failure.
type computeClient struct {
	cfg *Config

	mu  sync.Mutex
	svc *compute.Service
}

func newComputeClient(cfg *Config) *computeClient { return &computeClient{cfg: cfg} }

func (c *computeClient) service(ctx context.Context) (*compute.Service, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.svc != nil {
		return c.svc, nil
	}
	var client *http.Client
	if c.cfg.HTTPClient != nil {
		client = boundedhttp.Client(c.cfg.HTTPClient, maxComputeResponse)
	} else {
		// The credentials wrap a bounded transport, so the bound applies
		// to Compute's answers; the client refuses redirects, which
		// would carry the access token elsewhere.
		opts := []option.ClientOption{option.WithScopes(compute.ComputeReadonlyScope)}
		if c.cfg.ServiceAccountFile != "" {
			opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, c.cfg.ServiceAccountFile))
		}
		rt, err := htransport.NewTransport(ctx, boundedhttp.Transport(http.DefaultTransport, maxComputeResponse), opts...)
		if err != nil {
			return nil, fmt.Errorf("gcpiit: Compute API credentials: %w", err)
		}
		client = &http.Client{Transport: rt, CheckRedirect: boundedhttp.RefuseRedirect, Timeout: boundedhttp.DefaultTimeout}
	}
	opts := []option.ClientOption{option.WithHTTPClient(client)}
	if c.cfg.ComputeEndpoint != "" {
		opts = append(opts, option.WithEndpoint(c.cfg.ComputeEndpoint))
	}
	svc, err := compute.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: Compute API client: %w", err)
	}
	c.svc = svc
	return svc, nil
}

// instance reads the instance the token names (instances.get with its
// project, zone and name) and checks that it is that instance: a name is
// reused when an instance is deleted and another created, and the token of
// the first must not obtain the labels and service accounts of the second.
// An instance the API does not know, or another one, is nodeattest.ErrDenied.
func (c *computeClient) instance(ctx context.Context, ce computeEngine) (*compute.Instance, error) {
	svc, err := c.service(ctx)
	if err != nil {
		return nil, err
	}
	inst, err := svc.Instances.Get(ce.ProjectID, ce.Zone, ce.InstanceName).Context(ctx).Do()
	if err != nil {
		if gerr, ok := errors.AsType[*googleapi.Error](err); ok && gerr.Code == http.StatusNotFound {
			return nil, fmt.Errorf("gcpiit: %w: instance %s/%s/%s does not exist", nodeattest.ErrDenied, ce.ProjectID, ce.Zone, ce.InstanceName)
		}
		return nil, fmt.Errorf("gcpiit: reading instance %s/%s/%s: %w", ce.ProjectID, ce.Zone, ce.InstanceName, err)
	}
	if got := instanceIDString(inst.Id); got != ce.InstanceID || inst.Name != ce.InstanceName {
		return nil, fmt.Errorf("gcpiit: %w: instance %s/%s/%s is now instance %s, not the token's %s",
			nodeattest.ErrDenied, ce.ProjectID, ce.Zone, ce.InstanceName, got, ce.InstanceID)
	}
	return inst, nil
}
