package gcpiit

import (
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"

	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// This file is the agent's half: what an agent on a Compute Engine
// instance sends.

// The metadata server as SPIRE's agent plugin reaches it.
const (
	defaultIdentityTokenHost = "metadata.google.internal"
	defaultServiceAccount    = "default"
	identityTokenPath        = "/computeMetadata/v1/instance/service-accounts/%s/identity"
)

// AgentConfig configures AgentPayload; the zero value asks the instance's
// own metadata server for the default service account's token.
type AgentConfig struct {
	// IdentityTokenHost (SPIRE's identity_token_host) is the metadata
	// server's host, with an optional port, reached over plain HTTP as by
	// SPIRE; empty means "metadata.google.internal". An absolute http://
	// or https:// URL is taken as the metadata server's base URL instead
	// (arbor's addition, for a server behind TLS such as the test fake).
	IdentityTokenHost string
	// ServiceAccount (service_account) is the instance's service account
	// whose identity token is asked for, by email or alias; empty means
	// "default".
	ServiceAccount string
	// HTTPClient is the client the metadata server is called with; nil
	// means a default one. Redirects are never followed and answers are
	// bounded either way.
	HTTPClient *http.Client
}

// identityTokenURL is the metadata server URL of the token SPIRE's agent
// asks for: audience "spire-gcp-node-attestor", format=full.
func (c AgentConfig) identityTokenURL() (string, error) {
	sa := c.ServiceAccount
	if sa == "" {
		sa = defaultServiceAccount
	}
	if strings.ContainsAny(sa, "/?#%") || sa == "." || sa == ".." {
		return "", fmt.Errorf("gcpiit: service account %q is not an email or alias", sa)
	}
	base := &url.URL{Scheme: "http", Host: c.IdentityTokenHost}
	if base.Host == "" {
		base.Host = defaultIdentityTokenHost
	}
	if strings.Contains(c.IdentityTokenHost, "://") {
		u, err := url.Parse(c.IdentityTokenHost)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return "", fmt.Errorf("gcpiit: identity token host %q is neither a host nor an http(s) base URL", c.IdentityTokenHost)
		}
		base = &url.URL{Scheme: u.Scheme, Host: u.Host}
	} else if strings.ContainsAny(c.IdentityTokenHost, "/?#@") {
		return "", fmt.Errorf("gcpiit: identity token host %q is not a host", c.IdentityTokenHost)
	}
	q := url.Values{}
	q.Set("audience", Audience)
	q.Set("format", "full")
	base.Path = fmt.Sprintf(identityTokenPath, sa)
	base.RawQuery = q.Encode()
	return base.String(), nil
}

// AgentPayload returns the payload an agent sends as
// types.AttestationData{Type: "gcp_iit"}: the instance identity token the
// metadata server issues for the audience "spire-gcp-node-attestor" in the
// full format (project, zone and instance claims), byte for byte as it
// answered, which is what SPIRE's agent sends.
func AgentPayload(ctx context.Context, cfg AgentConfig) ([]byte, error) {
	u, err := cfg.identityTokenURL()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: %w", err)
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := boundedhttp.Client(cfg.HTTPClient, maxPayload).Do(req)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: asking the metadata server for an identity token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gcpiit: the metadata server answered %s to the identity token request", resp.Status)
	}
	token, err := io.ReadAll(resp.Body)
	if err != nil {
		if errors.Is(err, boundedhttp.ErrTooLarge) {
			return nil, fmt.Errorf("gcpiit: the metadata server's identity token exceeds %d bytes", maxPayload)
		}
		return nil, fmt.Errorf("gcpiit: reading the identity token: %w", err)
	}
	if len(token) == 0 {
		return nil, errors.New("gcpiit: the metadata server answered an empty identity token")
	}
	return token, nil
}

// AgentAttestor is the agent's gcp_iit node attestor (an
// agent.NodeAttestor): each attestation asks the metadata server for a
// fresh token. The server trusts an instance on first use, so the agent
// cannot attest again: an expired agent must be evicted first, as with
// spire-agent's gcp_iit.
type AgentAttestor struct{ cfg AgentConfig }

// NewAgentAttestor returns the agent half for cfg.
func NewAgentAttestor(cfg AgentConfig) *AgentAttestor { return &AgentAttestor{cfg: cfg} }

// Type is "gcp_iit".
func (*AgentAttestor) Type() string { return Type }

// Payload asks the metadata server for an identity token.
func (a *AgentAttestor) Payload(ctx context.Context) ([]byte, error) { return AgentPayload(ctx, a.cfg) }

// CanReattest is false: an instance attests once until evicted.
func (*AgentAttestor) CanReattest() bool { return false }
