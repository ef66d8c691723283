package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/admin"
)

func newAgentCommand() *cobra.Command {
	return adminGroup("agent", "Manage attested agents",
		`Agents attest to a server and then get SVIDs for the workloads of their
node. List them, show one, evict one (it must attest again) or ban one (its
SVID stops working and it cannot attest again until evicted).`,
		newAgentListCommand(), newAgentShowCommand(), newAgentEvictCommand(),
		newAgentBanCommand(), newAgentCountCommand(), newAgentRunCommand(), newAgentHealthcheckCommand())
}

// registerAgentFilter adds the list/count filter flags; resolve fills the
// optional booleans after parsing.
func registerAgentFilter(fs *pflag.FlagSet, f *admin.AgentFilter) (resolve func()) {
	fs.StringArrayVar(&f.Selectors, "selector", nil, "node selector type:value to match (repeatable; see --match)")
	fs.StringVar(&f.Match, "match", "superset", "how --selector matches: exact, subset, superset or any (spire-server: -matchSelectorsOn)")
	fs.StringVar(&f.AttestationType, "attestation-type", "", "only agents attested with this node attestor (join_token, x509pop, ...)")
	fs.Bool("banned", false, "only banned agents (--banned=false: only agents not banned)")
	fs.Bool("can-reattest", false, "only agents that can re-attest (--can-reattest=false: only those that cannot)")
	fs.StringVar(&f.ExpiresBefore, "expires-before", "", "only agents whose SVID expires before this RFC 3339 time")
	return func() {
		f.Banned = optionalBool(fs, "banned")
		f.CanReattest = optionalBool(fs, "can-reattest")
	}
}

func newAgentListCommand() *cobra.Command {
	var o adminOpts
	var f admin.AgentFilter
	var resolve func()
	return adminLeaf("list", "List attested agents",
		"List the attested agents matching every given filter (all without one).",
		`  arbor agent list
  arbor agent list --attestation-type join_token --output json
  arbor agent list --selector x509pop:subject:cn:web --match any`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			resolve = registerAgentFilter(fs, &f)
		},
		func(cmd *cobra.Command) error {
			resolve()
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.PrintAgents(ctx, p, f)
			})
		})
}

func newAgentCountCommand() *cobra.Command {
	var o adminOpts
	var f admin.AgentFilter
	var resolve func()
	return adminLeaf("count", "Count attested agents",
		"Count the attested agents matching every given filter (all without one).",
		`  arbor agent count
  arbor agent count --banned`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			resolve = registerAgentFilter(fs, &f)
		},
		func(cmd *cobra.Command) error {
			resolve()
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.CountAgents(ctx, p, f)
			})
		})
}

// agentByID builds show, evict and ban: one agent named by --spiffe-id.
func agentByID(use, short, long, example string, call func(*admin.Client) func(context.Context, admin.Printer, string) error) *cobra.Command {
	var o adminOpts
	var id string
	return adminLeaf(use, short, long, example,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.StringVar(&id, "spiffe-id", "", "the agent's SPIFFE ID (spiffe://<td>/spire/agent/...)")
		},
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return call(c)(ctx, p, id)
			})
		})
}

func newAgentShowCommand() *cobra.Command {
	return agentByID("show", "Show one attested agent",
		"Show the attested agent --spiffe-id: attestation type, SVID serial and expiry, selectors.",
		"  arbor agent show --spiffe-id spiffe://example.org/spire/agent/join_token/3f2a...",
		func(c *admin.Client) func(context.Context, admin.Printer, string) error { return c.ShowAgent })
}

func newAgentEvictCommand() *cobra.Command {
	return agentByID("evict", "Evict an attested agent",
		`Delete the attestation record of agent --spiffe-id: its SVID stops working
and it must attest again (a join token agent needs a new token).`,
		"  arbor agent evict --spiffe-id spiffe://example.org/spire/agent/x509pop/1a2b...",
		func(c *admin.Client) func(context.Context, admin.Printer, string) error { return c.EvictAgent })
}

func newAgentBanCommand() *cobra.Command {
	return agentByID("ban", "Ban an attested agent",
		`Ban agent --spiffe-id: its SVID stops working and it cannot attest again
until it is evicted.`,
		"  arbor agent ban --spiffe-id spiffe://example.org/spire/agent/x509pop/1a2b...",
		func(c *admin.Client) func(context.Context, admin.Printer, string) error { return c.BanAgent })
}
