package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/launcher"
	"github.com/arborid/arbor/topology"
)

func newUpCommand() *cobra.Command {
	var status time.Duration
	var logLevel string
	cmd := &cobra.Command{
		Use:   "up FILE",
		Short: "Run every server of a topology on this machine",
		Long: `Run every server block of the topology file in this process, each with its
own state directory and admin socket, print the tree once all are ready and
a status line per server while they run. State (SQLite, CA keys) lives in
each server's state_dir, so running it again resumes where it stopped.
Ctrl-C stops everything cleanly.

This build runs root tiers; downstream tiers (servers with a parent) come
with nesting support.`,
		Example: `  arbor up examples/quickstart.hcl
  arbor up --status-every 5s --log-level debug examples/quickstart.hcl`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, diags := topology.ParseFile(args[0])
			if diags.HasErrors() {
				return fmt.Errorf("invalid topology:\n%s", topology.FormatDiagnostics(diags, nil))
			}
			log, err := newLogger(os.Stderr, logLevel, "text")
			if err != nil {
				return err
			}
			var nodes []launcher.Node
			for _, s := range file.Servers {
				cfg, err := serverConfig(file, s)
				if err != nil {
					return err
				}
				nodes = append(nodes, launcher.Node{Name: s.Name, Parent: s.Parent, Config: cfg})
			}
			return launcher.Run(cmd.Context(), file, nodes, launcher.Options{Out: cmd.OutOrStdout(), StatusEvery: status, Logger: log})
		},
	}
	cmd.Flags().DurationVar(&status, "status-every", 30*time.Second, "interval of the status lines")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "server log level: debug, info, warn or error")
	return cmd
}
