package launcher

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/topology"
)

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// ServerConfig translates a topology server block into the server's Config.
// For a downstream server it connects to the co-located agent's Workload API
// (waiting for its SVID until ctx ends) and the parent; the returned Closer
// releases that.
func ServerConfig(ctx context.Context, f *topology.File, s *topology.Server, log *slog.Logger) (server.Config, io.Closer, error) {
	keyType, err := ca.ParseKeyType(string(s.KeyType))
	if err != nil {
		return server.Config{}, nil, err
	}
	jwtKeyType, err := ca.ParseKeyType(string(s.JWTKeyType))
	if err != nil {
		return server.Config{}, nil, err
	}
	cfg := server.Config{
		Name:           s.Name,
		TrustDomain:    f.TrustDomain,
		ListenAddr:     s.Listen,
		AdminSocket:    s.AdminSocket,
		HealthAddr:     s.HealthListen,
		StateDir:       s.StateDir,
		Datastore:      s.Datastore.Kind,
		SQLitePath:     s.Datastore.Path,
		PostgresDSN:    s.Datastore.DSN,
		CAKeyType:      keyType,
		JWTKeyType:     jwtKeyType,
		CATTL:          s.CATTL,
		X509SVIDTTL:    s.X509SVIDTTL,
		JWTSVIDTTL:     s.JWTSVIDTTL,
		AgentSVIDTTL:   s.AgentSVIDTTL,
		CAKeysInMemory: s.CAKeyStorage == topology.CAKeyStorageMemory,
		JWTIssuer:      s.JWTIssuer,
		Logger:         log,
	}
	for _, a := range s.NodeAttestors {
		switch a.Kind {
		case topology.NodeAttestorJoinToken:
			cfg.JoinToken = true
			cfg.DefaultJoinTokenTTL = a.JoinToken.DefaultTTL
		case topology.NodeAttestorX509PoP:
			cfg.X509PoP = &server.X509PoPConfig{CABundlePaths: a.X509PoP.CABundlePaths, AgentPathTemplate: a.X509PoP.AgentPathTemplate}
		}
	}
	var closer io.Closer = nopCloser{}
	switch {
	case s.Parent != "":
		parent, err := f.Server(s.Parent)
		if err != nil {
			return server.Config{}, nil, err
		}
		if s.Agent == nil {
			return server.Config{}, nil, fmt.Errorf("server %q has a parent but no agent block", s.Name)
		}
		up, err := spireUpstream(ctx, f, parent.Address, s.Agent.SocketPath, log)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("server %q: %w", s.Name, err)
		}
		cfg.Upstream, closer = up, up
	case s.Upstream != nil && s.Upstream.Kind == topology.UpstreamSPIRE:
		up, err := spireUpstream(ctx, f, s.Upstream.SPIRE.ServerAddress, s.Upstream.SPIRE.WorkloadAPISocket, log)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("server %q: upstream \"spire\": %w", s.Name, err)
		}
		cfg.Upstream, closer = up, up
	case s.Upstream != nil:
		return server.Config{}, nil, fmt.Errorf("server %q: upstream %q is not available in this build yet", s.Name, s.Upstream.Kind)
	}
	return cfg, closer, nil
}

// spireUpstream is the downstream mechanism against any SPIRE-API server.
func spireUpstream(ctx context.Context, f *topology.File, addr, socket string, log *slog.Logger) (*downstream.Upstream, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, err
	}
	return downstream.New(ctx, downstream.Config{
		TrustDomain:     f.TrustDomain,
		ParentAddress:   addr,
		WorkloadAPIAddr: "unix://" + abs,
		Logger:          log,
	})
}
