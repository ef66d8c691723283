package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/defaults"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/serverconn"
)

// WorkloadAttestor returns the selectors of the process pid that called the
// Workload API (unix:uid:1000, ...). Implementations live in
// agent/workloadattestor/...; every configured attestor is asked and their
// selectors are combined.
type WorkloadAttestor interface {
	Attest(ctx context.Context, pid int32) ([]selector.Selector, error)
}

// X509PoPConfig names the files of an x509pop node identity: a certificate
// (optionally followed by intermediates), its private key and an optional
// file of further intermediates, as spire-agent's x509pop plugin takes them.
type X509PoPConfig struct {
	CertPath, KeyPath, IntermediatesPath string
}

// Config configures an Agent. It must not be modified after New.
type Config struct {
	// TrustDomain is the trust domain of the server. Required.
	TrustDomain spiffeid.TrustDomain
	// ServerAddress is the server's agent API, host:port. Several servers
	// of one tier (replicas sharing a datastore) may be given separated by
	// commas, "a:8081,b:8081"; one name with several DNS records fails over
	// between them too. One of ServerAddress and ServerAddresses is required.
	ServerAddress string
	// ServerAddresses lists the tier's servers, each host:port, instead of
	// ServerAddress. The agent stays on one while it answers and moves to
	// another when it fails, without attesting again (the replicas share
	// the attested node state).
	ServerAddresses []string

	// TrustBundle holds the X.509 roots that authenticate the server until
	// the agent has attested (its bootstrap bundle). One of TrustBundle,
	// TrustBundleURL or InsecureBootstrap is required for a first start;
	// afterwards the bundle stored in DataDir is used.
	TrustBundle []*x509.Certificate
	// TrustBundleURL is an HTTPS URL serving the bootstrap bundle as PEM.
	TrustBundleURL string
	// InsecureBootstrap skips verifying the server during the first
	// attestation (test set-ups only).
	InsecureBootstrap bool

	// DataDir holds the agent SVID, its key and the trust bundle so that a
	// restart does not re-attest. Required.
	DataDir string
	// SocketPath is the Workload API Unix socket. Required.
	SocketPath string

	// JoinToken attests with a join token (used once).
	JoinToken string
	// JoinTokenFile attests with the join token held in this file instead,
	// which keeps it off the command line (where every local user sees it
	// in ps). The file should have mode 0600; it is read when the agent
	// first attests and removed once that attestation succeeded, the token
	// being spent.
	JoinTokenFile string
	// X509PoP attests with a node certificate and key when non-nil.
	X509PoP *X509PoPConfig
	// NodeAttestor attests with another attestation type (aws_iid,
	// k8s_psat, ...) when non-nil.
	NodeAttestor NodeAttestor

	// SyncInterval is how often entries and bundles are synced; zero means 5s.
	SyncInterval time.Duration
	// HealthAddr serves /live, /ready and /metrics over HTTP; "" disables it.
	HealthAddr string

	// WorkloadAttestors attest Workload API callers from their pid.
	WorkloadAttestors []WorkloadAttestor

	// SDS configures Envoy's Secret Discovery Service (v3), served on the
	// Workload API socket beside it. The zero value serves it with SPIRE's
	// resource names.
	SDS SDSConfig

	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // nil: time.Now
}

// NodeAttestor is the agent's half of a node attestation type whose
// attestation is one payload and no challenge (the cloud and Kubernetes
// attestors). Implementations are safe for concurrent use.
type NodeAttestor interface {
	// Type is the attestation data type, as the server's attestor of the
	// same name expects it ("aws_iid", "k8s_psat").
	Type() string
	// Payload returns the attestation payload, read afresh on every call
	// (an instance document or a projected token may have changed).
	Payload(ctx context.Context) ([]byte, error)
	// CanReattest reports whether the agent may attest again with a fresh
	// payload when its SVID can no longer be renewed (k8s_psat can; an
	// instance identity document attests once).
	CanReattest() bool
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// DefaultSyncInterval is the sync period when Config.SyncInterval is zero.
const DefaultSyncInterval = defaults.SyncInterval

func (c *Config) validate() error {
	switch {
	case c.TrustDomain.IsZero():
		return errors.New("agent: trust domain is required")
	case c.ServerAddress == "" && len(c.ServerAddresses) == 0:
		return errors.New("agent: server address is required")
	case c.ServerAddress != "" && len(c.ServerAddresses) > 0:
		return errors.New("agent: give a server address or a list of server addresses, not both")
	case c.DataDir == "":
		return errors.New("agent: data directory is required")
	case c.SocketPath == "":
		return errors.New("agent: workload API socket path is required")
	case c.JoinToken != "" && c.JoinTokenFile != "":
		return errors.New("agent: give a join token or a join token file, not both")
	case countTrue(c.JoinToken != "" || c.JoinTokenFile != "", c.X509PoP != nil, c.NodeAttestor != nil) > 1:
		return errors.New("agent: configure one node attestor (a join token, x509pop or another), not several")
	case c.SyncInterval < 0:
		return fmt.Errorf("agent: sync interval %v is negative", c.SyncInterval)
	case c.X509PoP != nil && (c.X509PoP.CertPath == "" || c.X509PoP.KeyPath == ""):
		return errors.New("agent: x509pop needs a certificate path and a key path")
	}
	if _, err := c.serverAddrs(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return c.SDS.validate()
}

// serverAddrs is the list of server addresses the configuration names.
func (c *Config) serverAddrs() ([]string, error) {
	if len(c.ServerAddresses) > 0 {
		return serverconn.Split(strings.Join(c.ServerAddresses, ","))
	}
	return serverconn.Split(c.ServerAddress)
}
