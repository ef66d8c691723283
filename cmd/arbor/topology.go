package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/arborid/arbor/topology"
)

func newTopologyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Check, plan, render, draw and simulate a topology file",
		Long: `Work on a topology file without running anything: find every mistake
(validate), see each tier's lifetimes and outage budgets (plan), produce one
machine's configuration (render), draw the tree (graph), and ask what expires
when a tier is down (simulate). See docs/topology.md.`,
		Example: `  arbor topology validate examples/multi-cloud.hcl
  arbor topology simulate examples/multi-cloud.hcl --down aws-us-east-1 --for 6h`,
	}
	cmd.AddCommand(newTopologyValidateCommand(), newTopologyPlanCommand(), newTopologyRenderCommand(),
		newTopologyGraphCommand(), newTopologySimulateCommand(), newTopologyApplyCommand())
	return cmd
}

// loadTopology parses path and prints its diagnostics (with source lines)
// to w. It fails when the file has errors.
func loadTopology(w io.Writer, path string, vars topologyVars) (*topology.File, hcl.Diagnostics, error) {
	opts, err := vars.options()
	if err != nil {
		return nil, nil, err
	}
	src, err := readTopology(path, "FILE")
	if err != nil {
		return nil, nil, err
	}
	opts.CheckFiles = true
	f, diags := topology.ParseWith(src, path, opts)
	fmt.Fprint(w, topology.FormatDiagnostics(diags, map[string]*hcl.File{path: {Bytes: src}}))
	if diags.HasErrors() {
		return nil, diags, fmt.Errorf("%s: %s", path, countDiags(diags))
	}
	return f, diags, nil
}

func countDiags(diags hcl.Diagnostics) string {
	var errs, warns int
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs++
		} else {
			warns++
		}
	}
	return fmt.Sprintf("%d error(s), %d warning(s)", errs, warns)
}

func newTopologyValidateCommand() *cobra.Command {
	var vars topologyVars
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Report every problem of a topology file at once",
		Long: `Parse FILE and check the language and the tree: unknown attributes and blocks,
bad durations, key types, SPIFFE IDs and selectors, unknown parents, cycles,
more than one root, duplicate addresses, ports and paths on one host, CA and
SVID TTLs that do not nest, upstream on a non-root, co-located agents whose
parent does not accept their attestor. Each problem is printed as
file:line:col: error: summary, with how to fix it. Warnings (join_token
co-located agents, outage budgets below min_outage_budget, SQLite with
replicas) are printed too but do not fail. Exit status 1 when there are errors.`,
		Example: `  arbor topology validate examples/multi-cloud.hcl
  arbor topology validate --var region_ca_ttl=14d prod.hcl`,
		Args: fileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, diags, err := loadTopology(cmd.OutOrStdout(), args[0], vars)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid: %d server(s), %s\n", args[0], len(f.Servers), countDiags(diags))
			return nil
		},
	}
	addVarFlag(cmd, &vars)
	return cmd
}

func newTopologyPlanCommand() *cobra.Command {
	var vars topologyVars
	cmd := &cobra.Command{
		Use:   "plan FILE",
		Short: "Show every tier with its CA TTL, rotation, chain length and outage budgets",
		Long: `Print the tree of servers with, per tier: CA TTL, when it rotates its CA,
how many certificates a workload's chain holds, how long the tier keeps
issuing if its parent is down, and how long its workloads keep valid SVIDs
if the tier itself is down. Budgets are worst cases; docs/topology.md
defines each.`,
		Example: `  arbor topology plan examples/multi-cloud.hcl`,
		Args:    fileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, _, err := loadTopology(cmd.ErrOrStderr(), args[0], vars)
			if err != nil {
				return err
			}
			return topology.NewPlan(f).WriteText(cmd.OutOrStdout())
		},
	}
	addVarFlag(cmd, &vars)
	return cmd
}

func newTopologyRenderCommand() *cobra.Command {
	var vars topologyVars
	var node, format, outDir string
	cmd := &cobra.Command{
		Use:   "render FILE --node NAME",
		Short: "Print the resolved configuration of one server",
		Long: `Print everything server NAME needs on its machine, with every default and
variable resolved: its server settings, its co-located agent, the entries it
holds (declared ones and the downstream entries of its children) and the
federations. --format hcl (default) or json (HCL's JSON form, for
Terraform's jsondecode or a configuration tool). The output is deterministic.

--format spire renders instead what real SPIRE ` + topology.SPIREVersion + ` needs to take NAME's
place in the tree: a spire-server server.conf (its CA from the parent through
UpstreamAuthority "spire", or the root's upstream) and, for a server with a
parent or an upstream "spire", the agent.conf of the spire-agent beside it.
Both are printed, agent.conf after a separator line, or written to DIR/server.conf
and DIR/agent.conf with --out DIR. Comments at the top say what must be done
outside the files (bootstrap bundle, registration entries).`,
		Example: `  arbor topology render examples/multi-cloud.hcl --node aws-us-east-1a
  arbor topology render examples/federation.hcl --node root --format json > root.json
  arbor topology render examples/multi-cloud.hcl --node aws-us-east-1 --format spire --out /etc/spire`,
		Args: fileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "hcl" && format != "json" && format != "spire" {
				return fmt.Errorf("--format %q: want hcl, json or spire", format)
			}
			if outDir != "" && format != "spire" {
				return fmt.Errorf("--out is for --format spire; redirect the output of --format %s instead", format)
			}
			f, _, err := loadTopology(cmd.ErrOrStderr(), args[0], vars)
			if err != nil {
				return err
			}
			if format == "spire" {
				cfg, err := topology.RenderSPIRE(f, node)
				if err != nil {
					return err
				}
				return writeSPIREConfig(cmd.OutOrStdout(), cfg, outDir)
			}
			cfg, err := topology.Render(f, node)
			if err != nil {
				return err
			}
			if format == "json" {
				return cfg.WriteJSON(cmd.OutOrStdout())
			}
			return cfg.WriteHCL(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "server block to render: NAME, or NAME/K for replica K of a block with replicas")
	cmd.Flags().StringVar(&format, "format", "hcl", "hcl, json or spire")
	cmd.Flags().StringVar(&outDir, "out", "", "with --format spire: write server.conf (and agent.conf) into this directory")
	cmd.MarkFlagRequired("node")
	addVarFlag(cmd, &vars)
	return cmd
}

// spireAgentSeparator comes between server.conf and agent.conf when both
// are printed.
const spireAgentSeparator = "\n# ---- agent.conf ----\n"

// writeSPIREConfig prints server.conf and agent.conf to w, or writes them
// into dir (and says so on w).
func writeSPIREConfig(w io.Writer, cfg *topology.SPIREConfig, dir string) error {
	if dir == "" {
		if err := cfg.WriteServerConf(w); err != nil {
			return err
		}
		if cfg.Agent == nil {
			return nil
		}
		if _, err := io.WriteString(w, spireAgentSeparator); err != nil {
			return err
		}
		return cfg.WriteAgentConf(w)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{{"server.conf", cfg.WriteServerConf}}
	if cfg.Agent != nil {
		files = append(files, struct {
			name  string
			write func(io.Writer) error
		}{"agent.conf", cfg.WriteAgentConf})
	}
	for _, file := range files {
		var b bytes.Buffer
		if err := file.write(&b); err != nil {
			return err
		}
		path := filepath.Join(dir, file.name)
		// 0600: the files may hold secrets (DSNs, Vault credentials, tokens).
		if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s\n", path)
	}
	return nil
}

func newTopologyGraphCommand() *cobra.Command {
	var vars topologyVars
	var format string
	cmd := &cobra.Command{
		Use:   "graph FILE",
		Short: "Draw the tree of servers as Graphviz DOT, Mermaid or SVG",
		Long: `Print the tree: one node per server with its tier and CA TTL, an edge from
each parent to each child labelled with the attestor of the child's
co-located agent, federated trust domains dashed. --format svg draws the
picture itself (no Graphviz needed): tiers in rows with the root at the
top, one box per server with its name, CA TTL and datastore.`,
		Example: `  arbor topology graph examples/multi-cloud.hcl --format svg > tree.svg
  arbor topology graph examples/multi-cloud.hcl | dot -Tpng > tree.png
  arbor topology graph examples/ha-root.hcl --format mermaid`,
		Args: fileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != topology.GraphDOT && format != topology.GraphMermaid && format != topology.GraphSVG {
				return fmt.Errorf("--format %q: want dot, mermaid or svg", format)
			}
			f, _, err := loadTopology(cmd.ErrOrStderr(), args[0], vars)
			if err != nil {
				return err
			}
			return topology.WriteGraph(cmd.OutOrStdout(), f, format)
		},
	}
	cmd.Flags().StringVar(&format, "format", topology.GraphDOT, "dot, mermaid or svg")
	addVarFlag(cmd, &vars)
	return cmd
}

// errNotSurvivable is returned (wrapped, with when and where identity is
// first lost) by simulate when workloads lose identity within the outage;
// main prints it and exits 1.
var errNotSurvivable = errors.New("not survivable: workloads lose identity during the outage")

func newTopologySimulateCommand() *cobra.Command { return newTopologySimulateCommandAt(time.Now) }

// newTopologySimulateCommandAt is simulate with the clock that gives the
// default start of the outage (--at now).
func newTopologySimulateCommandAt(now func() time.Time) *cobra.Command {
	var vars topologyVars
	var down, forDur, at string
	cmd := &cobra.Command{
		Use:   "simulate FILE --down NAME --for DURATION [--at TIME]",
		Short: "Show what expires when, if a tier is down for a while",
		Long: `Print a timeline of what happens when server NAME (all its replicas) is
unreachable for DURATION from TIME: when its workloads' X509-SVIDs and
JWT-SVIDs expire, when its agents and its children's co-located agents lose
their SVIDs, and when each child tier's CA runs out so that the whole subtree
loses identity. Times are worst cases (the earliest each can happen), with
the latest in brackets, as offsets from the start and as wall-clock times.
--at is the start of the outage, RFC 3339 (default now).

The exit status says whether the outage is survivable: 0 when no workload
loses identity within it (the output may still say the tree needs manual
action to recover), 1 with "not survivable: ..." when workloads lose
identity (and for any other error).`,
		Example: `  arbor topology simulate examples/multi-cloud.hcl --down aws-us-east-1 --for 6h
  arbor topology simulate prod.hcl --down root --for 3d --at 2025-01-10T08:00:00Z
  arbor topology simulate prod.hcl --down eu-west --for 2h && echo "2h outage of eu-west: survivable"`,
		Args: fileArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := topology.ParseDuration(forDur)
			if err != nil {
				return fmt.Errorf("--for: %w", err)
			}
			start := now().UTC().Truncate(time.Second) // RFC 3339 output has no fractions
			if at != "" && at != "now" {
				if start, err = time.Parse(time.RFC3339, at); err != nil {
					return fmt.Errorf("--at %q: want an RFC 3339 time such as 2025-01-10T08:00:00Z, or now", at)
				}
			}
			f, _, err := loadTopology(cmd.ErrOrStderr(), args[0], vars)
			if err != nil {
				return err
			}
			sim, err := topology.Simulate(f, down, d, start)
			if err != nil {
				return err
			}
			if err := sim.WriteText(cmd.OutOrStdout()); err != nil {
				return err
			}
			if !sim.Survivable {
				for _, e := range sim.Events {
					if e.LosesIdentity {
						return fmt.Errorf("%w: first at %s (%s on %s), %s into a %s outage of %s",
							errNotSurvivable, start.Add(e.At).UTC().Format(time.RFC3339), e.Kind, e.Server,
							topology.FormatDuration(e.At), topology.FormatDuration(d), sim.Down)
					}
				}
				return errNotSurvivable
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&down, "down", "", "name of the server that goes down")
	cmd.Flags().StringVar(&forDur, "for", "", "how long it stays down (e.g. 90m, 6h, 2d)")
	cmd.Flags().StringVar(&at, "at", "now", "when the outage starts (RFC 3339, or now)")
	cmd.MarkFlagRequired("down")
	cmd.MarkFlagRequired("for")
	addVarFlag(cmd, &vars)
	return cmd
}
