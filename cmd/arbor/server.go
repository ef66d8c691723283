package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/tier"
	"github.com/arborid/arbor/topology"
)

func newServerCommand() *cobra.Command {
	var topoPath, node, logLevel, logFormat string
	var vars topologyVars
	cmd := &cobra.Command{
		Use:   "server --topology FILE --node NAME",
		Short: "Run one server of a topology (any tier)",
		Long: `Run the server block NAME of the topology file FILE. The server listens for
agents and downstream servers on its listen address (gRPC over TLS, SPIRE's
server API), for administrators on its admin Unix socket, and for health
checks and Prometheus metrics on its health address (/live, /ready, /metrics).
It stops gracefully on SIGINT or SIGTERM.

One server at a time runs on a state directory: it holds a lock file in it
(arbor.lock, with its PID) until it exits, and a second one is refused at
once with the first one's PID. Its admin socket is never taken from another
process; a stale one, left by a server that died, is replaced.

A block with replicas = N runs as N processes: --node NAME (or NAME/1) is
replica 1, with the block's ports and paths; --node NAME/K (K from 2 to N)
is replica K, with every port of the block plus K-1 and its state in
<state_dir>/replica-K (its admin socket, its CA keys, its co-located
agent's files). The replicas share the block's PostgreSQL datastore, so
replicas 2 to N need datastore "postgres"; each keeps its own CA.`,
		Example: `  arbor server --topology examples/single-server.hcl --node root
  arbor server --topology prod.hcl --node us-east --log-format json
  arbor server --topology prod.hcl --node us-east --var region=us-east-1
  arbor server --topology examples/replicas.hcl --node root/2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, err := parseTopology(topoPath, "--topology", vars)
			if err != nil {
				return err
			}
			t, err := tier.ServerConfig(file, node)
			if err != nil {
				return err
			}
			if name, k, _ := topology.SplitNode(node); k == 1 {
				warnOldState(cmd.ErrOrStderr(), file, name)
			}
			if logLevel == "" {
				logLevel = t.LogLevel
			}
			if logFormat == "" {
				logFormat = t.LogFormat
			}
			log, level, err := newLevelLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			// New refuses a held state directory too; asked first, so that
			// a downstream tier is refused before Open waits for its agent.
			if err := server.CheckStateDir(t.Config.StateDir); err != nil {
				return err
			}
			cfg, closer, err := t.Open(cmd.Context(), log)
			if err != nil {
				return err
			}
			defer closer.Close()
			cfg.LogLevel = level
			s, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&topoPath, "topology", "", "topology file (HCL)")
	cmd.Flags().StringVar(&node, "node", "", "server block to run: NAME, or NAME/K for replica K of a block with replicas")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "debug, info, warn or error (default: the topology's, else info)")
	cmd.Flags().StringVar(&logFormat, "log-format", "", "text or json (default: the topology's, else text)")
	addVarFlag(cmd, &vars)
	cmd.MarkFlagRequired("topology")
	cmd.MarkFlagRequired("node")
	return cmd
}
