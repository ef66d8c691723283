package main

import (
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/launcher"
	"github.com/arborid/arbor/topology"
)

func newUpCommand() *cobra.Command {
	var status time.Duration
	var noDemo bool
	var stopTier, startTier string
	cmd := &cobra.Command{
		Use:   "up FILE",
		Short: "Run a whole topology on this machine",
		Long: `Run every server of the topology file on this machine, each as its own
process with its own state directory, admin socket and log (state_dir/logs).
A server with a parent gets a co-located agent attested to that parent; the
parent gets the downstream entry and join token for it, so the child obtains
its intermediate CA the same way it would on separate machines. Each leaf
also gets a workload agent and a demo workload that keeps an mTLS connection
to the demo workload of another leaf and validates a JWT-SVID from a third.

It prints the tree once everything serves, then a status line per tier.
Ctrl-C stops everything cleanly; running it again resumes from the state
directories (no new attestation, same CAs).`,
		Example: `  arbor up examples/quickstart.hcl
  arbor up --status-every 5s examples/quickstart.hcl

  # From another terminal: take the regional tier down, watch the leaves
  # keep issuing, then bring it back
  arbor up --stop regional examples/quickstart.hcl
  arbor up --start regional examples/quickstart.hcl`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, diags := topology.ParseFile(args[0])
			if diags.HasErrors() {
				return fmt.Errorf("invalid topology:\n%s", topology.FormatDiagnostics(diags, nil))
			}
			switch {
			case stopTier != "" && startTier != "":
				return fmt.Errorf("give --stop or --start, not both")
			case stopTier != "":
				msg, err := launcher.Control(cmd.Context(), file, "stop", stopTier)
				fmt.Fprint(cmd.OutOrStdout(), msg)
				return err
			case startTier != "":
				msg, err := launcher.Control(cmd.Context(), file, "start", startTier)
				fmt.Fprint(cmd.OutOrStdout(), msg)
				return err
			}
			// `arbor up | tee up.log` and Ctrl-C: the terminal's SIGINT kills
			// tee first, and Go kills a process writing to a closed stdout
			// with SIGPIPE, which would leave every child running. Ignored,
			// the write fails with EPIPE instead and arbor up goes on
			// managing (and then stopping) its tree.
			signal.Ignore(syscall.SIGPIPE)
			return launcher.Up(cmd.Context(), file, launcher.Options{Out: cmd.OutOrStdout(), StatusEvery: status, NoDemo: noDemo})
		},
	}
	cmd.Flags().DurationVar(&status, "status-every", 30*time.Second, "interval of the status lines")
	cmd.Flags().BoolVar(&noDemo, "no-demo", false, "do not start workload agents and demo workloads")
	cmd.Flags().StringVar(&stopTier, "stop", "", "ask the running arbor up of FILE to stop the server of tier NAME")
	cmd.Flags().StringVar(&startTier, "start", "", "ask the running arbor up of FILE to start tier NAME again")
	return cmd
}
