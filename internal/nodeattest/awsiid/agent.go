package awsiid

import (
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"

	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// This file is the agent's half: what an agent on an EC2 instance sends.

// The instance metadata paths below /latest/dynamic/, as SPIRE's agent
// plugin reads them.
const (
	documentPath   = "instance-identity/document"
	signaturePath  = "instance-identity/signature"
	rsa2048SigPath = "instance-identity/rsa2048"
)

// AgentConfig configures AgentPayload; the zero value reads the instance's
// own metadata service.
type AgentConfig struct {
	// EC2MetadataEndpoint (SPIRE's ec2_metadata_endpoint) is the metadata
	// service's base URL. Empty means the SDK's default:
	// AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254.
	EC2MetadataEndpoint string
	// HTTPClient is the client the metadata service is called with; nil
	// means a default one. Redirects are never followed and answers are
	// bounded either way.
	HTTPClient *http.Client
}

// AgentPayload returns the payload an agent sends as
// types.AttestationData{Type: "aws_iid"}: the instance identity document and
// its RSA-1024 and RSA-2048 signatures, read from the instance metadata
// service with an IMDSv2 session token (no fallback to the token-less
// IMDSv1), encoded as SPIRE's agent encodes them.
func AgentPayload(ctx context.Context, cfg AgentConfig) ([]byte, error) {
	client := imds.New(imds.Options{
		Endpoint:       cfg.EC2MetadataEndpoint,
		HTTPClient:     boundedhttp.Client(cfg.HTTPClient, maxIMDSResponse),
		EnableFallback: aws.FalseTernary,
	})
	var data attestationData
	for _, f := range []struct {
		path string
		dst  *string
	}{
		{documentPath, &data.Document},
		{signaturePath, &data.Signature},
		{rsa2048SigPath, &data.SignatureRSA2048},
	} {
		v, err := getDynamic(ctx, client, f.path)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	out, err := json.Marshal(&data)
	if err != nil {
		return nil, fmt.Errorf("awsiid: encoding payload: %w", err)
	}
	return out, nil
}

func getDynamic(ctx context.Context, client *imds.Client, path string) (string, error) {
	res, err := client.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("awsiid: reading %s from the instance metadata service: %w", path, err)
	}
	defer res.Content.Close()
	b, err := io.ReadAll(io.LimitReader(res.Content, maxIMDSResponse+1))
	if err != nil {
		return "", fmt.Errorf("awsiid: reading %s from the instance metadata service: %w", path, err)
	}
	if len(b) > maxIMDSResponse {
		return "", fmt.Errorf("awsiid: %s from the instance metadata service exceeds %d bytes", path, maxIMDSResponse)
	}
	return string(b), nil
}

// AgentAttestor is the agent's aws_iid node attestor (an agent.NodeAttestor):
// each attestation reads the instance identity document afresh. The server
// trusts an instance on first use, so the agent cannot attest again with
// it: an expired agent must be evicted first, as with spire-agent's aws_iid.
type AgentAttestor struct{ cfg AgentConfig }

// NewAgentAttestor returns the agent half for cfg.
func NewAgentAttestor(cfg AgentConfig) *AgentAttestor { return &AgentAttestor{cfg: cfg} }

// Type is "aws_iid".
func (*AgentAttestor) Type() string { return Type }

// Payload reads the document and its signatures from the metadata service.
func (a *AgentAttestor) Payload(ctx context.Context) ([]byte, error) { return AgentPayload(ctx, a.cfg) }

// CanReattest is false: an instance attests once until evicted.
func (*AgentAttestor) CanReattest() bool { return false }
