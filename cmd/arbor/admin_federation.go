package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/admin"
)

func newFederationCommand() *cobra.Command {
	return adminGroup("federation", "Manage federation relationships",
		`A federation relationship names another trust domain, its SPIFFE bundle
endpoint and how the endpoint authenticates (https_web: a Web PKI
certificate; https_spiffe: the endpoint server's SPIFFE ID, verified against
a bundle of its trust domain held here). The server holding a relationship
(the root, unless the topology's fetched_by names another tier) fetches its
bundle at the refresh hint its endpoint serves; the tiers below it receive
the bundle from their parent. spire-server's "federation" commands work too.`,
		newFederationListCommand(), newFederationShowCommand(), newFederationCreateCommand(),
		newFederationUpdateCommand(), newFederationDeleteCommand(), newFederationRefreshCommand())
}

func registerRelationship(fs *pflag.FlagSet, r *admin.Relationship, format *string) {
	fs.StringVar(&r.TrustDomain, "trust-domain", "", "the trust domain to federate with, e.g. partner.example (spire-server: -trustDomain)")
	fs.StringVar(&r.BundleEndpointURL, "bundle-endpoint-url", "", "https:// URL of its SPIFFE bundle endpoint (spire-server: -bundleEndpointURL)")
	fs.StringVar(&r.Profile, "profile", "https_spiffe", "endpoint profile: https_spiffe or https_web (spire-server: -bundleEndpointProfile)")
	fs.StringVar(&r.EndpointSPIFFEID, "endpoint-spiffe-id", "", "the endpoint server's SPIFFE ID, for https_spiffe (spire-server: -endpointSpiffeID)")
	fs.StringVar(&r.BundlePath, "trust-domain-bundle-path", "", "a file with the trust domain's bundle to store, for the first https_spiffe contact (spire-server: -trustDomainBundlePath)")
	fs.StringVar(format, "trust-domain-bundle-format", "pem", "format of that file: pem or spiffe (spire-server: -trustDomainBundleFormat)")
}

func relationshipLeaf(use, short, long, example string, call func(*admin.Client) func(context.Context, admin.Printer, admin.Relationship) error) *cobra.Command {
	var o adminOpts
	var r admin.Relationship
	var format string
	return adminLeaf(use, short, long, example,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			registerRelationship(fs, &r, &format)
		},
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				f, err := admin.ParseBundleFormat(format)
				if err != nil {
					return err
				}
				r.BundleFormat = f
				return call(c)(ctx, p, r)
			})
		})
}

func newFederationCreateCommand() *cobra.Command {
	return relationshipLeaf("create", "Federate with another trust domain",
		"Create a federation relationship; with --trust-domain-bundle-path the file is stored as that trust domain's bundle.",
		`  arbor federation create --trust-domain partner.example \
      --bundle-endpoint-url https://partner.example:8443 \
      --endpoint-spiffe-id spiffe://partner.example/spire/server \
      --trust-domain-bundle-path partner.pem
  arbor federation create --trust-domain web.example --profile https_web \
      --bundle-endpoint-url https://web.example/bundle`,
		func(c *admin.Client) func(context.Context, admin.Printer, admin.Relationship) error {
			return c.CreateFederation
		})
}

func newFederationUpdateCommand() *cobra.Command {
	return relationshipLeaf("update", "Change a federation relationship",
		"Replace a relationship's endpoint URL and profile (and, when given, the trust domain's bundle).",
		`  arbor federation update --trust-domain partner.example \
      --bundle-endpoint-url https://bundle.partner.example \
      --endpoint-spiffe-id spiffe://partner.example/spire/server`,
		func(c *admin.Client) func(context.Context, admin.Printer, admin.Relationship) error {
			return c.UpdateFederation
		})
}

// federationByTD builds show, delete and refresh: one relationship named
// by --trust-domain.
func federationByTD(use, short, long, example string, call func(*admin.Client) func(context.Context, admin.Printer, string) error) *cobra.Command {
	var o adminOpts
	var td, id string
	return adminLeaf(use, short, long, example,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.StringVar(&td, "trust-domain", "", "the federated trust domain (spire-server: -trustDomain)")
			fs.StringVar(&id, "id", "", "the same, as name or spiffe://name (spire-server: -id)")
		},
		func(cmd *cobra.Command) error {
			if td == "" {
				td = strings.TrimPrefix(id, "spiffe://")
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return call(c)(ctx, p, td)
			})
		})
}

func newFederationShowCommand() *cobra.Command {
	return federationByTD("show", "Show a federation relationship",
		"Show one relationship and the bundle held for its trust domain.",
		`  arbor federation show --trust-domain partner.example --output json`,
		func(c *admin.Client) func(context.Context, admin.Printer, string) error { return c.ShowFederation })
}

func newFederationDeleteCommand() *cobra.Command {
	return federationByTD("delete", "Stop federating with a trust domain",
		"Delete a relationship; the trust domain's bundle stays (delete it with bundle delete).",
		`  arbor federation delete --trust-domain partner.example`,
		func(c *admin.Client) func(context.Context, admin.Printer, string) error { return c.DeleteFederation })
}

func newFederationRefreshCommand() *cobra.Command {
	return federationByTD("refresh", "Fetch a federated bundle now",
		"Fetch the trust domain's bundle from its endpoint now (the server holding the relationship does so by itself at the endpoint's refresh hint).",
		`  arbor federation refresh --trust-domain partner.example`,
		func(c *admin.Client) func(context.Context, admin.Printer, string) error { return c.RefreshFederation })
}

func newFederationListCommand() *cobra.Command {
	var o adminOpts
	return adminLeaf("list", "List federation relationships",
		"List every federation relationship.",
		`  arbor federation list
  arbor federation list --output json`,
		o.register,
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error { return c.PrintFederations(ctx, p) })
		})
}
