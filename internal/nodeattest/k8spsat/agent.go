package k8spsat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// This file is the agent's half: what an agent running in a pod sends to
// attest with the projected service account token the kubelet mounts.

// DefaultTokenPath is where SPIRE's agent reads the token unless told
// otherwise: a serviceAccountToken projected volume named "spire-agent"
// under /var/run/secrets/tokens.
const DefaultTokenPath = "/var/run/secrets/tokens/spire-agent" //nolint:gosec // a path, not a credential

// AgentConfig configures the agent's half (SPIRE's agent plugin_data).
type AgentConfig struct {
	// Cluster is the name of the agent's cluster, as the server's
	// configuration knows it (cluster); required.
	Cluster string
	// TokenPath is the file holding the projected service account token
	// (token_path); if empty, DefaultTokenPath.
	TokenPath string
}

// AgentPayload reads the token at cfg.TokenPath and returns the payload an
// agent sends as types.AttestationData{Type: "k8s_psat"}, byte for byte what
// SPIRE's agent sends. The token is read anew on every call: the kubelet
// rotates it.
func AgentPayload(cfg AgentConfig) ([]byte, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("k8s_psat: cluster is required")
	}
	path := cfg.TokenPath
	if path == "" {
		path = DefaultTokenPath
	}
	token, err := readToken(path)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(&attestationData{Cluster: cfg.Cluster, Token: token})
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: encoding payload: %w", err)
	}
	if len(out) > maxPayloadSize {
		return nil, fmt.Errorf("k8s_psat: payload with the token of %s is %d bytes, more than a server accepts (%d)", path, len(out), maxPayloadSize)
	}
	return out, nil
}

// readToken reads the token file, unchanged as SPIRE reads it, refusing an
// empty one and reading no more than a payload can carry.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("k8s_psat: reading token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPayloadSize+1))
	if err != nil {
		return "", fmt.Errorf("k8s_psat: reading token: %w", err)
	}
	switch {
	case len(data) == 0:
		return "", fmt.Errorf("k8s_psat: token file %s is empty", path)
	case len(data) > maxPayloadSize:
		return "", fmt.Errorf("k8s_psat: token file %s is larger than %d bytes", path, maxPayloadSize)
	}
	return string(data), nil
}

// AgentAttestor is the agent's k8s_psat node attestor (an agent.NodeAttestor):
// each attestation reads the projected token afresh, and the agent may attest
// again with a fresh token when it can no longer renew its SVID, as
// spire-agent's k8s_psat does.
type AgentAttestor struct{ cfg AgentConfig }

// NewAgentAttestor returns the agent half for cfg.
func NewAgentAttestor(cfg AgentConfig) *AgentAttestor { return &AgentAttestor{cfg: cfg} }

// Type is "k8s_psat".
func (*AgentAttestor) Type() string { return Type }

// Payload reads the token file and returns the attestation payload.
func (a *AgentAttestor) Payload(context.Context) ([]byte, error) { return AgentPayload(a.cfg) }

// CanReattest is true: a projected token attests again.
func (*AgentAttestor) CanReattest() bool { return true }
