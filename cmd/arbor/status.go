package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/launcher"
	"github.com/arborid/arbor/internal/cli/output"
	"github.com/arborid/arbor/topology"
)

func newStatusCommand() *cobra.Command {
	var format string
	var vars topologyVars
	cmd := &cobra.Command{
		Use:   "status FILE [FILE...]",
		Short: "Show the live tree that arbor up runs for the topology files",
		Long: `Show, on demand, the tree that a running arbor up started from each FILE:
for every server whether it serves, its attested agents, when its CA
expires (not-after), its remaining outage budget (how long it keeps issuing
if its parent went down now, until its CA's not-after; and, from the
topology's lifetimes as arbor topology plan computes it, the same at worst),
whether it reaches its parent, the age of the bundle of each trust domain it
federates with, and its demo workload's checks. Each replica of a block
with replicas is its own line, NAME/K (its own CA, agents counted from the
shared datastore).

Each server is asked directly, on its admin socket and its health_listen
(/metrics; without one, CA expiry, parent reachability and bundle ages are
unknown); arbor up's control socket adds the tiers stopped with --stop and
the demo workloads. With --output json it prints one JSON array, one object
per FILE (the field names are listed in docs/cli.md and do not change).

When no arbor up runs a FILE it says so in one line and exits with status 1.`,
		Example: `  arbor status examples/quickstart.hcl
  arbor status --output json examples/quickstart.hcl | jq '.[0].tiers[] | {name, state, outage_budget_seconds}'

  # Both trust domains of a federated pair started with one arbor up
  arbor status examples/federation/example-org.hcl examples/federation/partner.hcl`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := output.ParseFormat(format)
			if err != nil {
				return err
			}
			files, err := parseTopologyFiles(args, vars)
			if err != nil {
				return err
			}
			var all []*launcher.TreeStatus
			var notRunning error
			for _, file := range files {
				st, err := launcher.Status(cmd.Context(), file)
				if errors.Is(err, launcher.ErrNotRunning) {
					notRunning = errors.Join(notRunning, err)
					continue
				}
				if err != nil {
					return err
				}
				all = append(all, st)
			}
			if f == output.FormatJSON && len(all) > 0 {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(all); err != nil {
					return err
				}
			} else {
				for i, st := range all {
					if i > 0 {
						fmt.Fprintln(cmd.OutOrStdout())
					}
					if err := st.WriteText(cmd.OutOrStdout()); err != nil {
						return err
					}
				}
			}
			return notRunning
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "pretty", "output format: pretty or json")
	addVarFlag(cmd, &vars)
	return cmd
}

// parseTopologies parses the topology files that arbor status and arbor
// logs are given, refusing invalid ones with their diagnostics.
func parseTopologies(paths []string) ([]*topology.File, error) {
	return parseTopologyFiles(paths, nil)
}
