package tier

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/server"
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
	var closer io.Closer = nopCloser{}
	u := s.Upstream
	switch {
	case u.Parent != nil:
		c := *u.Parent
		c.Logger = log
		up, err := downstream.New(ctx, c)
		if err != nil {
			return server.Config{}, nil, fmt.Errorf("tier: server %q: parent %s: %w", cfg.Name, c.ParentAddress, err)
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
