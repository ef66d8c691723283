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
	"github.com/arborid/arbor/upstream/awspca"
	"github.com/arborid/arbor/upstream/disk"
	"github.com/arborid/arbor/upstream/vault"
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
		up, err := externalUpstream(ctx, f, s.Upstream, log)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("server %q: upstream %q: %w", s.Name, s.Upstream.Kind, err)
		}
		cfg.Upstream = up
	}
	return cfg, closer, nil
}

// externalUpstream builds the disk, vault or aws_pca adapter of a root tier.
func externalUpstream(ctx context.Context, f *topology.File, u *topology.Upstream, log *slog.Logger) (ca.Upstream, error) {
	switch {
	case u.Disk != nil:
		return disk.New(disk.Config{
			TrustDomain: f.TrustDomain, CertFile: u.Disk.CertFilePath, KeyFile: u.Disk.KeyFilePath,
			BundleFile: u.Disk.BundleFilePath, Logger: log,
		})
	case u.Vault != nil:
		v := u.Vault
		cfg := vault.Config{
			TrustDomain: f.TrustDomain, Address: v.Address, Namespace: v.Namespace, PKIMount: v.PKIMount,
			CACertFile: v.CACertPath, InsecureSkipVerify: v.InsecureSkipVerify, Logger: log,
		}
		a := v.Auth
		switch a.Method {
		case topology.VaultAuthToken:
			cfg.Token = a.Token
		case topology.VaultAuthAppRole:
			cfg.AppRole = &vault.AppRole{Mount: a.Mount, RoleID: a.RoleID, SecretID: a.SecretID}
		case topology.VaultAuthCert:
			cfg.Cert = &vault.CertAuth{Mount: a.Mount, Name: a.RoleName, CertFile: a.ClientCertPath, KeyFile: a.ClientKeyPath}
		case topology.VaultAuthKubernetes:
			cfg.Kubernetes = &vault.Kubernetes{Mount: a.Mount, Role: a.Role, TokenFile: a.TokenPath}
		default:
			return nil, fmt.Errorf("unknown Vault auth method %q", a.Method)
		}
		return vault.New(cfg)
	case u.AWSPCA != nil:
		c := u.AWSPCA
		return awspca.New(ctx, awspca.Config{
			TrustDomain: f.TrustDomain, Region: c.Region, CertificateAuthorityARN: c.CertificateAuthorityARN,
			TemplateARN: c.CASigningTemplateARN, SigningAlgorithm: c.SigningAlgorithm, AssumeRoleARN: c.AssumeRoleARN,
			Endpoint: c.Endpoint, SupplementalBundleFile: c.SupplementalBundlePath, Logger: log,
		})
	}
	return nil, fmt.Errorf("unknown upstream kind %q", u.Kind)
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
