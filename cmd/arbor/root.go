package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "arbor",
		Short: "A nested-first SPIFFE identity plane",
		Long: `arbor runs every tier of a SPIFFE trust domain — root, regional and leaf
servers, and their agents — from one declarative topology file. It speaks
SPIRE's server API and the SPIFFE Workload API, so spire-agent, spire-server
and go-spiffe clients work with it on any tier.`,
		Example: `  # Run a whole nested trust domain on this machine (root, regional, two leaves)
  arbor up examples/quickstart.hcl

  # Run one server of a topology
  arbor server --topology examples/single-server.hcl --node root

  # Check a topology, see its outage budgets, ask what a 6h regional outage breaks
  arbor topology validate examples/multi-cloud.hcl
  arbor topology simulate examples/multi-cloud.hcl --down aws-us-east-1 --for 6h

  # Register a workload and create a join token for an agent
  arbor entry create -socketPath examples/.arbor/single-server/root/admin.sock \
      -parentID spiffe://example.org/host -spiffeID spiffe://example.org/web -selector unix:uid:1000
  arbor token generate -socketPath examples/.arbor/single-server/root/admin.sock`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       currentVersion().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newServerCommand(), newUpCommand(), newStatusCommand(), newLogsCommand(), newVersionCommand(), newSVIDCommand(), newTopologyCommand(), newDemoWorkloadCommand())
	for _, c := range adminCommands() {
		root.AddCommand(c)
	}
	return root
}

// newLogger builds the process logger from level and format names.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	log, _, err := newLevelLogger(w, level, format)
	return log, err
}

// newLevelLogger is newLogger with the level it was built with, which a
// server's logger.v1 changes at runtime.
func newLevelLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, nil, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", level)
	}
	lv := new(slog.LevelVar)
	lv.Set(l)
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
	}
	return nil, nil, fmt.Errorf("unknown log format %q (want text or json)", format)
}
