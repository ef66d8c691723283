package main

import (
	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/reconcile"
)

func newTopologyApplyCommand() *cobra.Command {
	var vars topologyVars
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Reconcile running servers with the topology through their admin sockets",
		Long: `Bring every running server of FILE in line with it, root first, through
each server's admin socket: the downstream entry for each child server (parent
ID = the child's co-located agent, downstream = true, the child's SPIFFE ID)
and the server's entry blocks. Entries are matched by SPIFFE ID and parent ID:
missing ones are created, changed ones updated, others left alone. Each
federation block becomes a federation relationship on the server that fetches
it (fetched_by, else the root), matched by trust domain: created, or updated
when its bundle_endpoint or profile changed (bootstrap_bundle is sent only
while the server holds no bundle of that trust domain); the running server
fetches it without a restart. A relationship a server holds that the file does
not give it is reported and left alone: apply never deletes. It is idempotent;
--dry-run prints the plan without changing anything. Lines start with +
(create), ~ (update), = (unchanged) or ? (held by the server, not in the file).

Join tokens for co-located agents are not created here (they are secrets for
one machine): arbor up creates them, or use arbor token generate --spiffe-id
with the agent's spiffe_id.`,
		Example: `  arbor topology apply --dry-run prod.hcl
  arbor topology apply prod.hcl`,
		Args: fileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, _, err := loadTopology(cmd.ErrOrStderr(), args[0], vars)
			if err != nil {
				return err
			}
			return reconcile.Run(cmd.Context(), f, reconcile.Options{DryRun: dryRun, Out: cmd.OutOrStdout()})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the changes without making them")
	addVarFlag(cmd, &vars)
	return cmd
}
