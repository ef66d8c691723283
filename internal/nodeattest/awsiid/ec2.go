package awsiid

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"
)

// maxSecondsBetweenAttachments is SPIRE's bound on how much later (or
// earlier) than the primary network interface the root EBS volume may have
// been attached: a root volume attached after launch may hold another
// instance's disk, and with it that instance's identity.
const maxSecondsBetweenAttachments = 60

// maxCachedClients bounds the client cache. Keys are (account, region)
// pairs from signed documents, so the bound is only reached by a server
// serving thousands of accounts; past it clients are built per call.
const maxCachedClients = 4096

// instanceAPI is what attestation asks AWS, in the instance's account and
// region.
type instanceAPI interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	GetInstanceProfile(context.Context, *iam.GetInstanceProfileInput, ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error)
}

type sdkClients struct {
	*ec2.Client
	iam *iam.Client
}

func (c sdkClients) GetInstanceProfile(ctx context.Context, in *iam.GetInstanceProfileInput, opts ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error) {
	return c.iam.GetInstanceProfile(ctx, in, opts...)
}

// clientCache builds the SDK configuration once and one client set per
// (account, region), so that a burst of attestations neither reloads the
// credential chain nor assumes the role again for each instance.
type clientCache struct {
	cfg        *Config
	httpClient *http.Client

	mu      sync.Mutex
	base    *aws.Config
	entries map[string]*clientEntry
	built   int // client sets built, for tests
}

type clientEntry struct {
	ready  chan struct{}
	client instanceAPI
	err    error
}

func newClientCache(cfg *Config) *clientCache {
	c := &clientCache{cfg: cfg, entries: map[string]*clientEntry{}}
	if cfg.HTTPClient != nil {
		c.httpClient = boundedhttp.Client(cfg.HTTPClient, maxAWSResponse)
	}
	return c
}

// get returns the clients for account and region, building them on first
// use. Concurrent first uses wait for one build; a failed build is not
// cached.
func (c *clientCache) get(ctx context.Context, account, region string) (instanceAPI, error) {
	key := account + "@" + region
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok {
		if len(c.entries) >= maxCachedClients {
			c.mu.Unlock()
			return c.build(ctx, account, region)
		}
		e = &clientEntry{ready: make(chan struct{})}
		c.entries[key] = e
		c.mu.Unlock()
		e.client, e.err = c.build(ctx, account, region)
		if e.err != nil {
			c.mu.Lock()
			delete(c.entries, key)
			c.mu.Unlock()
		}
		close(e.ready)
		return e.client, e.err
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.client, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *clientCache) build(ctx context.Context, account, region string) (instanceAPI, error) {
	base, err := c.baseConfig(ctx)
	if err != nil {
		return nil, err
	}
	cfg := base.Copy()
	cfg.Region = region
	if c.cfg.AssumeRole != "" {
		roleARN := fmt.Sprintf("arn:%s:iam::%s:role/%s", c.cfg.Partition, account, c.cfg.AssumeRole)
		stsClient := sts.NewFromConfig(cfg, func(o *sts.Options) {
			if c.cfg.STSEndpoint != "" {
				o.BaseEndpoint = aws.String(c.cfg.STSEndpoint)
			}
		})
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, roleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "arbor-aws_iid"
		}))
	}
	c.mu.Lock()
	c.built++
	c.mu.Unlock()
	return sdkClients{
		Client: ec2.NewFromConfig(cfg, func(o *ec2.Options) {
			if c.cfg.EC2Endpoint != "" {
				o.BaseEndpoint = aws.String(c.cfg.EC2Endpoint)
			}
		}),
		iam: iam.NewFromConfig(cfg, func(o *iam.Options) {
			if c.cfg.IAMEndpoint != "" {
				o.BaseEndpoint = aws.String(c.cfg.IAMEndpoint)
			}
		}),
	}, nil
}

// baseConfig loads the SDK configuration (credentials, retries) once; a
// failed load is retried on the next attestation.
func (c *clientCache) baseConfig(ctx context.Context) (aws.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base != nil {
		return *c.base, nil
	}
	var opts []func(*config.LoadOptions) error
	if c.cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.cfg.AccessKeyID, c.cfg.SecretAccessKey, "")))
	}
	base, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("awsiid: loading AWS configuration: %w", err)
	}
	// The SDK's own client follows no redirect and honours AWS_CA_BUNDLE;
	// a client from Config replaces it after loading, since the SDK can
	// add a CA bundle only to its own.
	if c.httpClient != nil {
		base.HTTPClient = c.httpClient
	}
	base.APIOptions = append(base.APIOptions, limitResponses(maxAWSResponse))
	c.base = &base
	return base, nil
}

func (c *clientCache) builtCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.built
}

// limitResponses bounds every response body the SDK reads, whichever HTTP
// client carries it.
func limitResponses(limit int64) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Deserialize.Add(middleware.DeserializeMiddlewareFunc("arborResponseLimit", func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleDeserialize(ctx, in)
			if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil && resp.Body != nil {
				resp.Body = boundedhttp.Body(resp.Body, limit)
			}
			return out, md, err
		}), middleware.After)
	}
}

// describeInstance returns the pending or running instance the document
// names. An instance AWS does not know, or knows as stopped or terminated,
// is ErrDenied; a failing call is an internal error.
func describeInstance(ctx context.Context, api instanceAPI, doc identityDocument) (ec2types.Instance, error) {
	out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		InstanceIds: []string{doc.InstanceID},
		Filters: []ec2types.Filter{{
			Name:   aws.String("instance-state-name"),
			Values: []string{"pending", "running"},
		}},
	})
	if err != nil {
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && strings.HasPrefix(apiErr.ErrorCode(), "InvalidInstanceID.") {
			return ec2types.Instance{}, fmt.Errorf("awsiid: %w: instance %s not found in account %s, region %s (%s)", nodeattest.ErrDenied, doc.InstanceID, doc.AccountID, doc.Region, apiErr.ErrorCode())
		}
		return ec2types.Instance{}, fmt.Errorf("awsiid: describing instance %s: %w", doc.InstanceID, err)
	}
	var found []ec2types.Instance
	for _, r := range out.Reservations {
		found = append(found, r.Instances...)
	}
	switch {
	case len(found) == 0:
		return ec2types.Instance{}, fmt.Errorf("awsiid: %w: no pending or running instance %s in account %s, region %s", nodeattest.ErrDenied, doc.InstanceID, doc.AccountID, doc.Region)
	case len(found) > 1:
		return ec2types.Instance{}, fmt.Errorf("awsiid: DescribeInstances returned %d instances for %s", len(found), doc.InstanceID)
	case aws.ToString(found[0].InstanceId) != doc.InstanceID:
		return ec2types.Instance{}, fmt.Errorf("awsiid: DescribeInstances for %s returned instance %q", doc.InstanceID, aws.ToString(found[0].InstanceId))
	}
	return found[0], nil
}

// checkBlockDevice is SPIRE's anti-tampering check: unless the root device
// is an instance store, the root EBS volume must have been attached within
// a minute of the primary network interface, that is at launch.
func checkBlockDevice(inst ec2types.Instance) error {
	var eniAttached *ec2types.InstanceNetworkInterfaceAttachment
	for _, ni := range inst.NetworkInterfaces {
		if a := ni.Attachment; a != nil && a.DeviceIndex != nil && *a.DeviceIndex == 0 {
			eniAttached = a
			break
		}
	}
	if eniAttached == nil || eniAttached.AttachTime == nil {
		return errors.New("the instance has no network interface with device index 0 and an attach time")
	}
	if inst.RootDeviceType == ec2types.DeviceTypeInstanceStore {
		return nil
	}
	root := aws.ToString(inst.RootDeviceName)
	if root == "" {
		return errors.New("the instance has no root device name")
	}
	for _, bdm := range inst.BlockDeviceMappings {
		if aws.ToString(bdm.DeviceName) != root {
			continue
		}
		if bdm.Ebs == nil || bdm.Ebs.AttachTime == nil {
			return fmt.Errorf("root device %s has no EBS attach time", root)
		}
		d := math.Abs(float64(eniAttached.AttachTime.Unix() - bdm.Ebs.AttachTime.Unix()))
		if d > maxSecondsBetweenAttachments {
			return fmt.Errorf("root volume %s and network interface 0 were attached %.0f seconds apart (more than %d: the root volume was replaced after launch)", root, d, maxSecondsBetweenAttachments)
		}
		return nil
	}
	return fmt.Errorf("no block device mapping for root device %s", root)
}

// instanceProfileName returns the name in an instance profile ARN
// (arn:aws:iam::123456789012:instance-profile/path/name).
func instanceProfileName(profileARN string) (string, error) {
	a, err := arn.Parse(profileARN)
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(a.Resource, "instance-profile/")
	if !ok || rest == "" {
		return "", fmt.Errorf("%q is not an instance profile ARN", profileARN)
	}
	parts := strings.Split(rest, "/")
	return parts[len(parts)-1], nil
}
