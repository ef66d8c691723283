package azuremsi

import (
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// This file is the agent's half: what an agent on an Azure VM sends.

// defaultMetadataEndpoint is the instance metadata service every Azure VM
// reaches.
const defaultMetadataEndpoint = "http://169.254.169.254"

// tokenPath and tokenAPIVersion are the request SPIRE's agent plugin makes.
const (
	tokenPath       = "/metadata/identity/oauth2/token"
	tokenAPIVersion = "2018-02-01"
)

// agentTimeout bounds the metadata call when the context has no deadline.
const agentTimeout = 10 * time.Second

// AgentConfig configures AgentPayload; the zero value asks the VM's own
// metadata service for a token for DefaultResourceID.
type AgentConfig struct {
	// ResourceID (SPIRE's resource_id) is the resource to request the
	// token for, the audience the server checks; empty means
	// DefaultResourceID.
	ResourceID string
	// MetadataEndpoint is the metadata service's base URL (arbor's, for
	// tests; SPIRE's agent always asks http://169.254.169.254).
	MetadataEndpoint string
	// HTTPClient is the client the metadata service is called with; nil
	// means a default one. Redirects are never followed and answers are
	// bounded either way.
	HTTPClient *http.Client
}

// AgentPayload returns the payload an agent sends as
// types.AttestationData{Type: "azure_msi"}: a token for the VM's managed
// identity from the instance metadata service
// (GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...
// with "Metadata: true"), encoded as SPIRE's agent encodes it.
func AgentPayload(ctx context.Context, cfg AgentConfig) ([]byte, error) {
	resource := cfg.ResourceID
	if resource == "" {
		resource = DefaultResourceID
	}
	base := cfg.MetadataEndpoint
	if base == "" {
		base = defaultMetadataEndpoint
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/") + tokenPath + "?api-version=" + tokenAPIVersion)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("azuremsi: metadata endpoint %q is not an absolute http(s) URL", base)
	}
	// As SPIRE builds it: the query re-encoded with resource added, so
	// "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F".
	q := u.Query()
	q.Set("resource", resource)
	u.RawQuery = q.Encode()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, agentTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: %w", err)
	}
	req.Header.Set("Metadata", "true")
	resp, err := boundedhttp.Client(cfg.HTTPClient, maxIMDSResponse).Do(req)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: requesting a managed identity token: %w", err)
	}
	defer resp.Body.Close()
	body, err := readBounded(resp.Body, "the managed identity token")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("azuremsi: requesting a managed identity token: metadata service answered %s: %.200s", resp.Status, body)
	}
	var r struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("azuremsi: decoding the metadata service's token answer: %w", err)
	}
	if r.AccessToken == "" {
		return nil, errors.New("azuremsi: the metadata service's answer has no access_token")
	}
	out, err := json.Marshal(&attestationData{Token: r.AccessToken})
	if err != nil {
		return nil, fmt.Errorf("azuremsi: encoding payload: %w", err)
	}
	if len(out) > maxPayload {
		return nil, fmt.Errorf("azuremsi: payload is %d bytes, more than a server accepts (%d)", len(out), maxPayload)
	}
	return out, nil
}

// AgentAttestor is the agent's azure_msi node attestor (an
// agent.NodeAttestor): each attestation asks the metadata service for a
// token afresh. The server trusts a VM's identity on first use, so the agent
// cannot attest again: an expired agent must be evicted first, as with
// spire-agent's azure_msi (whose server answers can_reattest false).
type AgentAttestor struct{ cfg AgentConfig }

// NewAgentAttestor returns the agent half for cfg.
func NewAgentAttestor(cfg AgentConfig) *AgentAttestor { return &AgentAttestor{cfg: cfg} }

// Type is "azure_msi".
func (*AgentAttestor) Type() string { return Type }

// Payload asks the metadata service for a token.
func (a *AgentAttestor) Payload(ctx context.Context) ([]byte, error) { return AgentPayload(ctx, a.cfg) }

// CanReattest is false: a VM's identity attests once until evicted.
func (*AgentAttestor) CanReattest() bool { return false }
