package main

import (
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/launcher"
	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/topology"
)

func newUpCommand() *cobra.Command {
	var status time.Duration
	var noDemo bool
	var stopTier, startTier string
	var vars topologyVars
	cmd := &cobra.Command{
		Use:   "up FILE [FILE...]",
		Short: "Run a whole topology on this machine",
		Long: `Run every server of the topology file on this machine, each as its own
process with its own state directory, admin socket and log (state_dir/logs).
A server with a parent gets a co-located agent attested to that parent; the
parent gets the downstream entry and join token for it, so the child obtains
its intermediate CA the same way it would on separate machines. Each leaf
also gets a workload agent and a demo workload that keeps an mTLS connection
to the demo workload of the next leaf and validates a JWT-SVID from the
previous one.

A server block with replicas = N runs as N server processes, named NAME,
NAME/2, ..., NAME/N in the progress lines, arbor status and arbor logs, each
with its own CA, state directory (state_dir/replica-K) and logs; replica 1
starts first (it creates the datastore's schema), then the others. Replicas
share one PostgreSQL database: a block with replicas on SQLite is refused
(set datastore "postgres" { dsn = env("ARBOR_POSTGRES_DSN") }). Every replica
of a downstream tier runs its own co-located agent, attested to the parent.
arbor up --stop NAME/K stops one replica; the others keep serving.

Several files, one trust domain each, run side by side: every file's root
first, then, for each federation block naming the trust domain of another
file, the server that fetches it (the root, or fetched_by) is given that
trust domain's bundle once (an https_spiffe bundle endpoint needs it for the
first contact) and fetches it over the endpoint; the demo workloads federate
with those trust domains and form one ring across the files, neighbours in
different trust domains.

It prints the tree once everything serves, then a status line per tier and
one per federation a tier fetches (the federated bundle's age). From another
terminal, arbor status FILE shows the same on demand (with --output json),
and arbor logs FILE [NAME...] the merged logs of the processes (each in
state_dir/logs, rotated at 4 MiB). Ctrl-C stops everything, normally well
within a second, and ends with a "stopped" line; running it again resumes
from the state directories (no new attestation, same CAs).`,
		Example: `  arbor up examples/quickstart.hcl
  arbor up --status-every 5s examples/quickstart.hcl

  # From another terminal: take the regional tier down, watch the leaves
  # keep issuing, then bring it back
  arbor up --stop regional examples/quickstart.hcl
  arbor up --start regional examples/quickstart.hcl

  # From another terminal: the live tree, and its logs as they are written
  arbor status examples/quickstart.hcl
  arbor logs --follow examples/quickstart.hcl leaf-a

  # Three replicas of a root on one PostgreSQL; stop and start one of them
  ARBOR_POSTGRES_DSN=postgres://arbor@127.0.0.1:5432/arbor arbor up examples/replicas.hcl
  arbor up --stop root/2 examples/replicas.hcl
  arbor up --start root/2 examples/replicas.hcl

  # Two trust domains federated over their bundle endpoints; NAME is
  # TD/NAME when both files declare a server of that name
  arbor up examples/federation/example-org.hcl examples/federation/partner.hcl
  arbor up --stop partner.example/leaf examples/federation/example-org.hcl examples/federation/partner.hcl`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := parseTopologyFiles(args, vars)
			if err != nil {
				return err
			}
			switch {
			case stopTier != "" && startTier != "":
				return fmt.Errorf("give --stop or --start, not both")
			case stopTier != "":
				msg, err := launcher.Control(cmd.Context(), files, "stop", stopTier)
				fmt.Fprint(cmd.OutOrStdout(), msg)
				return err
			case startTier != "":
				msg, err := launcher.Control(cmd.Context(), files, "start", startTier)
				fmt.Fprint(cmd.OutOrStdout(), msg)
				return err
			}
			// `arbor up | tee up.log` and Ctrl-C: the terminal's SIGINT kills
			// tee first, and Go kills a process writing to a closed stdout
			// with SIGPIPE, which would leave every child running. Ignored,
			// the write fails with EPIPE instead and arbor up goes on
			// managing (and then stopping) its tree.
			signal.Ignore(syscall.SIGPIPE)
			for _, f := range files {
				warnOldState(cmd.ErrOrStderr(), f)
			}
			err = launcher.Up(cmd.Context(), files, launcher.Options{Out: cmd.OutOrStdout(), StatusEvery: status, NoDemo: noDemo, Vars: vars})
			var held *statelock.HeldError
			if errors.As(err, &held) {
				// The file's tree runs already: show it rather than a
				// second one (the refusal, which names the holder, is the
				// last line).
				showRunningTrees(cmd, files)
			}
			return err
		},
	}
	addVarFlag(cmd, &vars)
	cmd.Flags().DurationVar(&status, "status-every", 30*time.Second, "interval of the status lines")
	cmd.Flags().BoolVar(&noDemo, "no-demo", false, "do not start workload agents and demo workloads")
	cmd.Flags().StringVar(&stopTier, "stop", "", "ask the running arbor up of the files to stop the server NAME, or NAME/K for replica K (TD/NAME when several files declare NAME)")
	cmd.Flags().StringVar(&startTier, "start", "", "ask the running arbor up of the files to start the server NAME (or NAME/K) again")
	// NAME completes to the servers of the files already on the line.
	for _, flag := range []string{"stop", "start"} {
		cmd.RegisterFlagCompletionFunc(flag, func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			return nodeNames(args), cobra.ShellCompDirectiveNoFileComp
		})
	}
	return cmd
}

// showRunningTrees prints the status of the trees of files that an arbor up
// already runs, as arbor status does; a file no arbor up runs is left out.
func showRunningTrees(cmd *cobra.Command, files []*topology.File) {
	out := cmd.OutOrStdout()
	for _, f := range files {
		ts, err := launcher.Status(cmd.Context(), f)
		if err != nil {
			continue
		}
		fmt.Fprintf(out, "%s is already running; its tree (arbor status %s):\n", f.Path, f.Path)
		ts.WriteText(out)
	}
}
