package main

import (
	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/launcher"
)

func newLogsCommand() *cobra.Command {
	var follow bool
	var tail int
	var vars topologyVars
	cmd := &cobra.Command{
		Use:   "logs FILE [NODE...]",
		Short: "Print the merged logs of the tree arbor up runs for FILE",
		Long: `Print the logs of the processes arbor up runs (or ran) for the topology
FILE, merged in time order, each line prefixed by its tier and process:
NODE/server, NODE/agent (the co-located agent attested to NODE's parent),
NODE/workload-agent and NODE/demo. With NODE names, only the logs of those
servers and of the processes beside them. Replica K of a block with
replicas is NAME/K (its logs are in state_dir/replica-K/logs); NAME is
replica 1.

arbor up keeps each process's log in the logs directory of its server's
state_dir and rotates it at 4 MiB (the older part in NAME.log.1, read
first), so the logs stay readable after the tree stopped. --follow keeps
printing lines as they are written, as tail -f does, until Ctrl-C.`,
		Example: `  arbor logs examples/quickstart.hcl
  arbor logs --tail 20 examples/quickstart.hcl leaf-a leaf-b

  # Watch the regional tier while taking it down and back up
  arbor logs --follow examples/quickstart.hcl regional`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := parseTopologyFiles(args[:1], vars)
			if err != nil {
				return err
			}
			return launcher.Logs(cmd.Context(), files[0], args[1:], launcher.LogsOptions{
				Out: cmd.OutOrStdout(), Tail: tail, Follow: follow})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	cmd.Flags().IntVarP(&tail, "tail", "n", 0, "print only the last N lines of the merge (0: all)")
	addVarFlag(cmd, &vars)
	return cmd
}

// completeNodes completes a topology FILE (the first argument) as a file
// name and every argument after it as a server name of that file.
func completeNodes(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return nodeNames(args[:1]), cobra.ShellCompDirectiveNoFileComp
}

// nodeNames are the server names the topology files declare (TD/NAME when
// several files declare one), each replica K ≥ 2 as NAME/K, nil when one
// does not parse.
func nodeNames(paths []string) []string {
	files, err := parseTopologies(paths)
	if err != nil {
		return nil
	}
	count := map[string]int{}
	for _, f := range files {
		for _, s := range f.Servers {
			count[s.Name]++
		}
	}
	var out []string
	for _, f := range files {
		for _, s := range f.Walk() {
			for _, r := range s.ReplicaList() {
				if count[s.Name] > 1 {
					out = append(out, f.TrustDomain.Name()+"/"+r.Node())
				} else {
					out = append(out, r.Node())
				}
			}
		}
	}
	return out
}
