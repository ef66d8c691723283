package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/admin"
)

func newBundleCommand() *cobra.Command {
	return adminGroup("bundle", "Show the trust bundle and manage federated bundles",
		`The trust bundle holds the X.509 roots and JWT keys that verify SVIDs of the
trust domain. "show" prints the server's own bundle (to give to other trust
domains or to a spire-agent's trust_bundle_path); "prune" removes expired
authorities from it; list, set, delete and count manage the bundles of
federated trust domains.`,
		newBundleShowCommand(), newBundlePruneCommand(), newBundleListCommand(), newBundleSetCommand(),
		newBundleDeleteCommand(), newBundleCountCommand())
}

func bundleFormatFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "format", "pem", "bundle format: pem (X.509 roots) or spiffe (SPIFFE bundle JWKS with X.509 and JWT authorities)")
}

func newBundleShowCommand() *cobra.Command {
	var o adminOpts
	var format string
	return adminLeaf("show", "Print this server's trust bundle",
		`Print the trust domain's bundle: with --format pem the X.509 roots as PEM
certificates, with --format spiffe the SPIFFE bundle (JWKS with "use"
x509-svid/jwt-svid keys and spiffe_sequence) that another trust domain's
"bundle set --format spiffe" reads. A federated bundle fetched from an
endpoint that serves a spiffe_refresh_hint keeps it; the server's own
bundle has none (its bundle_endpoint serves its refresh_hint).`,
		`  arbor bundle show > bootstrap.pem
  arbor bundle show --format spiffe > example.org.jwks`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			bundleFormatFlag(fs, &format)
		},
		func(cmd *cobra.Command) error {
			f, err := admin.ParseBundleFormat(format)
			if err != nil {
				return fmt.Errorf("bundle show: --format: %w", err)
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.ShowBundle(ctx, p, f)
			})
		})
}

func newBundleListCommand() *cobra.Command {
	var o adminOpts
	var format, id string
	return adminLeaf("list", "Print federated bundles",
		"Print every federated trust domain's bundle, or only the one of --id.",
		`  arbor bundle list
  arbor bundle list --id partner.example --format spiffe`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			bundleFormatFlag(fs, &format)
			fs.StringVar(&id, "id", "", "federated trust domain (name or spiffe://name) to print")
		},
		func(cmd *cobra.Command) error {
			f, err := admin.ParseBundleFormat(format)
			if err != nil {
				return fmt.Errorf("bundle list: --format: %w", err)
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.ListBundles(ctx, p, id, f)
			})
		})
}

func newBundleSetCommand() *cobra.Command {
	var o adminOpts
	var format, id, path string
	return adminLeaf("set", "Create or replace a federated bundle",
		`Create or replace the bundle of federated trust domain --id from --path
("-" or no --path reads stdin), in PEM or SPIFFE bundle format.`,
		`  arbor bundle set --id partner.example --path partner.pem
  curl -s https://partner.example/bundle | arbor bundle set --id partner.example --format spiffe`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			bundleFormatFlag(fs, &format)
			fs.StringVar(&id, "id", "", "federated trust domain (name or spiffe://name)")
			fs.StringVar(&path, "path", "-", `file holding the bundle, "-" for stdin`)
		},
		func(cmd *cobra.Command) error {
			f, err := admin.ParseBundleFormat(format)
			if err != nil {
				return fmt.Errorf("bundle set: --format: %w", err)
			}
			if id == "" {
				return fmt.Errorf("bundle set: --id (the federated trust domain) is required")
			}
			r, closeFn, err := openInput(cmd, path)
			if err != nil {
				return fmt.Errorf("bundle set: %w", err)
			}
			defer closeFn()
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.SetBundle(ctx, p, id, r, f)
			})
		})
}

func newBundleDeleteCommand() *cobra.Command {
	var o adminOpts
	var id, mode string
	return adminLeaf("delete", "Delete a federated bundle",
		`Delete the bundle of federated trust domain --id. --mode says what happens
to entries that federate with it: restrict (default) refuses while there are
any, dissociate removes the trust domain from them, delete deletes them.`,
		`  arbor bundle delete --id partner.example
  arbor bundle delete --id partner.example --mode dissociate`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.StringVar(&id, "id", "", "federated trust domain (name or spiffe://name)")
			fs.StringVar(&mode, "mode", "restrict", "restrict, dissociate or delete")
		},
		func(cmd *cobra.Command) error {
			m, err := admin.ParseDeleteMode(mode)
			if err != nil {
				return fmt.Errorf("bundle delete: --mode: %w", err)
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.DeleteBundle(ctx, p, id, m)
			})
		})
}

func newBundleCountCommand() *cobra.Command {
	var o adminOpts
	return adminLeaf("count", "Count bundles",
		"Count the bundles the server holds: its own and every federated one.",
		"  arbor bundle count",
		func(fs *pflag.FlagSet) { o.register(fs) },
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.CountBundles(ctx, p)
			})
		})
}

func newBundlePruneCommand() *cobra.Command {
	var o adminOpts
	var grace time.Duration
	return adminLeaf("prune", "Remove expired authorities from this server's trust bundle",
		`Remove from the server's own bundle every X.509 root and JWT key that expired
more than --grace ago (0, the default, removes every expired one), including
old roots handed down by the parent or an upstream authority. The authorities
the server's CA still uses stay. The server also prunes by itself at each
rotation step, 24h after expiry; this does it now. Run it on each tier that
should drop them at once: a child never takes an expired authority back from
its parent.`,
		`  arbor bundle prune
  arbor bundle prune --grace 1h`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.DurationVar(&grace, "grace", 0, "keep authorities that expired less than this long ago")
		},
		func(cmd *cobra.Command) error {
			if grace < 0 {
				return fmt.Errorf("bundle prune: --grace %v is negative", grace)
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.PruneBundle(ctx, p, grace)
			})
		})
}
