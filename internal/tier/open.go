package tier

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream"
	"github.com/arborid/arbor/upstream/awspca"
	"github.com/arborid/arbor/upstream/disk"
	"github.com/arborid/arbor/upstream/vault"
)

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// Open builds the tier's CA source and returns the server's Config with it
// and log set. For a downstream tier it connects to the co-located agent's
// Workload API (waiting for its SVID until ctx ends) and the parent; the
// Closer releases that.
func (s Server) Open(ctx context.Context, log *slog.Logger) (server.Config, io.Closer, error) {
	cfg := s.Config
	cfg.Logger = log
	attestors, err := s.Attestors.build(cfg)
	if err != nil {
		return server.Config{}, nil, err
	}
	cfg.NodeAttestors = append(slices.Clip(cfg.NodeAttestors), attestors...)
	var closer io.Closer = nopCloser{}
	u := s.Upstream
	switch {
	case u.Parent != nil:
		c := *u.Parent
		c.Logger = log
		up, err := downstream.New(ctx, c)
		if err != nil {
			parents := c.ParentAddress
			if len(c.ParentAddresses) > 0 {
				parents = strings.Join(c.ParentAddresses, ",")
			}
			return server.Config{}, nil, fmt.Errorf("tier: server %q: parent %s: %w", cfg.Name, parents, err)
		}
		cfg.Parent, closer = up, up
	case u.Disk != nil:
		c := *u.Disk
		c.Logger = log
		up, err := disk.New(c)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("tier: server %q: upstream \"disk\": %w", cfg.Name, err)
		}
		cfg.Upstream = up
	case u.Vault != nil:
		c := *u.Vault
		c.Logger = log
		up, err := vault.New(c)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("tier: server %q: upstream \"vault\": %w", cfg.Name, err)
		}
		cfg.Upstream = up
	case u.AWSPCA != nil:
		c := *u.AWSPCA
		c.Logger = log
		up, err := awspca.New(ctx, c)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("tier: server %q: upstream \"aws_pca\": %w", cfg.Name, err)
		}
		cfg.Upstream = up
	}
	return cfg, closer, nil
}

// build makes the server halves of the attestors: it reads aws_iid's
// identity certificates and each k8s_psat cluster's kubeconfig, and calls
// no cloud or cluster API.
func (a Attestors) build(cfg server.Config) ([]nodeattest.Attestor, error) {
	var out []nodeattest.Attestor
	if c := a.AWSIID; c != nil {
		ac := c.Config
		if len(c.IdentityCertificatePaths) > 0 {
			for _, path := range c.IdentityCertificatePaths {
				data, err := os.ReadFile(path)
				if err == nil {
					var certs []*x509.Certificate
					certs, err = upstream.ParseCertificatesPEM(data)
					ac.EveryRegionSigningCertificates = append(ac.EveryRegionSigningCertificates, certs...)
				}
				if err != nil {
					return nil, fmt.Errorf("tier: server %q: node_attestor \"aws_iid\": identity_certificate_paths: %s: %w", cfg.Name, path, err)
				}
			}
		}
		at, err := awsiid.New(ac, cfg.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("tier: server %q: node_attestor \"aws_iid\": %w", cfg.Name, err)
		}
		out = append(out, at)
	}
	if c := a.GCPIIT; c != nil {
		at, err := gcpiit.New(*c, cfg.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("tier: server %q: node_attestor \"gcp_iit\": %w", cfg.Name, err)
		}
		out = append(out, at)
	}
	if c := a.AzureMSI; c != nil {
		at, err := azuremsi.New(*c, cfg.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("tier: server %q: node_attestor \"azure_msi\": %w", cfg.Name, err)
		}
		out = append(out, at)
	}
	if c := a.K8sPSAT; c != nil {
		at, err := k8spsat.New(*c, cfg.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("tier: server %q: node_attestor \"k8s_psat\": %w", cfg.Name, err)
		}
		out = append(out, at)
	}
	return out, nil
}
