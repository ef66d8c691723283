package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/admin"
)

const exampleSocket = "examples/.arbor/single-server/root/admin.sock"

func newAuthorityCommand() *cobra.Command {
	return adminGroup("authority", "Rotate, taint and revoke the server's signing authorities",
		`Manage the server's own signing authorities, as spire-server localauthority
and upstreamauthority do (localauthority.v1 on the admin socket). Each kind,
the X.509 CA and the JWT key, has an active authority (signing now), at most
one prepared (published in the bundle, not yet used) and at most one old (the
one the last activation replaced). The rotation prepares and activates on its
own schedule; these commands do the same steps by hand:

  prepare   publish a new authority in the bundle
  activate  sign with the prepared one from now on (the active one becomes old)
  taint     mark the old one tainted in the bundle: agents and child tiers
            re-mint everything it signed ahead of time
  revoke    remove the tainted old one from the bundle

On a tier whose X.509 CA comes from an upstream (a parent tier or an external
PKI), taint and revoke the upstream authority that signed the old CA with
arbor authority upstream. See docs/operations.md, "Authorities: rotate, taint,
revoke".`,
		newAuthorityKindCommand(admin.AuthorityX509), newAuthorityKindCommand(admin.AuthorityJWT), newAuthorityUpstreamCommand())
}

func newAuthorityKindCommand(kind admin.AuthorityKind) *cobra.Command {
	name := string(kind)
	title := map[admin.AuthorityKind]string{admin.AuthorityX509: "X.509 CA", admin.AuthorityJWT: "JWT signing key"}[kind]
	idWhat := map[admin.AuthorityKind]string{
		admin.AuthorityX509: "the CA certificate's subject key ID, as show prints it",
		admin.AuthorityJWT:  "the key ID, as show prints it",
	}[kind]
	var showOpts, prepOpts adminOpts
	show := adminLeaf("show", "Show the active, prepared and old "+title,
		"Print the active, prepared and old "+title+" of the server (spire-server localauthority "+name+" show).",
		"  arbor authority "+name+" show --socket-path "+exampleSocket+"\n  arbor authority "+name+" show -socketPath "+exampleSocket+" -output json",
		func(fs *pflag.FlagSet) { showOpts.register(fs) },
		func(cmd *cobra.Command) error {
			return showOpts.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.ShowAuthorities(ctx, p, kind)
			})
		})
	prepare := adminLeaf("prepare", "Prepare a new "+title+" and publish it in the bundle",
		"Make a new "+title+" and publish it in the trust bundle, replacing any prepared one; it signs\nnothing until activated (by hand or by the rotation at its time).",
		"  arbor authority "+name+" prepare --socket-path "+exampleSocket,
		func(fs *pflag.FlagSet) { prepOpts.register(fs) },
		func(cmd *cobra.Command) error {
			return prepOpts.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.PrepareAuthority(ctx, p, kind)
			})
		})
	act := func(action admin.AuthorityAction, short, long string) *cobra.Command {
		var o adminOpts
		var id string
		return adminLeaf(string(action), short, long,
			"  arbor authority "+name+" "+string(action)+" --socket-path "+exampleSocket+" --authority-id ID\n"+
				"  # spire-server spelling works too:\n"+
				"  arbor authority "+name+" "+string(action)+" -socketPath "+exampleSocket+" -authorityID ID",
			func(fs *pflag.FlagSet) {
				o.register(fs)
				fs.StringVar(&id, "authority-id", "", "the authority: "+idWhat+" (spire-server: -authorityID)")
			},
			func(cmd *cobra.Command) error {
				return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
					return c.ActOnAuthority(ctx, p, kind, action, id)
				})
			})
	}
	return adminGroup(name, "Manage the server's "+title,
		"Show, prepare, activate, taint and revoke the server's "+title+" (spire-server localauthority "+name+").",
		show, prepare,
		act(admin.ActionActivate, "Sign with the prepared "+title+" from now on",
			"Make the prepared "+title+" the active one at once; the active one becomes old.\nRefused (InvalidArgument) unless --authority-id names the prepared one."),
		act(admin.ActionTaint, "Mark the old "+title+" tainted",
			"Mark the old "+title+" tainted in the trust bundle. Agents re-mint every SVID it\nsigned ahead of time (X.509), or drop the JWT-SVIDs it signed (JWT); child tiers\nwhose intermediate chains to it get a new one. Refused for the active and the\nprepared authority, and (X.509) on a tier whose CA comes from an upstream."),
		act(admin.ActionRevoke, "Remove the tainted old "+title+" from the bundle",
			"Remove the old "+title+", which must be tainted, from the trust bundle: nothing it\nsigned verifies any longer. Taint first and wait until every SVID has been\nre-minted."))
}

func newAuthorityUpstreamCommand() *cobra.Command {
	act := func(action admin.AuthorityAction, short, long string) *cobra.Command {
		var o adminOpts
		var skid string
		return adminLeaf(string(action), short, long,
			"  arbor authority upstream "+string(action)+" --socket-path "+exampleSocket+" --subject-key-id SKID\n"+
				"  # spire-server spelling works too:\n"+
				"  arbor authority upstream "+string(action)+" -socketPath "+exampleSocket+" -subjectKeyID SKID",
			func(fs *pflag.FlagSet) {
				o.register(fs)
				fs.StringVar(&skid, "subject-key-id", "", "the upstream authority's subject key ID: the upstream authority subject key ID that arbor authority x509 show prints for the old CA (spire-server: -subjectKeyID)")
			},
			func(cmd *cobra.Command) error {
				return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
					return c.ActOnUpstreamAuthority(ctx, p, action, skid)
				})
			})
	}
	return adminGroup("upstream", "Taint or revoke the upstream authority that signed the old X.509 CA",
		`On a tier whose X.509 CA is signed by an upstream (a parent tier or an
external PKI), taint or revoke the upstream authority that signed the old CA
(spire-server upstreamauthority). Activate a CA signed by another upstream
authority first: the one signing the active CA is refused.`,
		act(admin.ActionTaint, "Mark the upstream authority that signed the old X.509 CA tainted",
			"Mark the upstream X.509 authority tainted in the trust bundle; agents and child\ntiers re-mint what chains to it."),
		act(admin.ActionRevoke, "Remove the tainted upstream authority from the bundle",
			"Remove the upstream X.509 authority, which must be tainted, from the trust bundle."))
}

func newLoggerCommand() *cobra.Command {
	var getOpts, setOpts, resetOpts adminOpts
	var level string
	get := adminLeaf("get", "Show the server's log level",
		"Print the server's current log level and the level it was launched with (spire-server logger get).",
		"  arbor logger get --socket-path "+exampleSocket,
		func(fs *pflag.FlagSet) { getOpts.register(fs) },
		func(cmd *cobra.Command) error {
			return getOpts.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.GetLogger(ctx, p)
			})
		})
	set := adminLeaf("set", "Change the server's log level",
		`Set the running server's log level (spire-server logger set). SPIRE's names
map onto arbor's levels: trace and debug log debug lines, panic and fatal
log only what is above error.`,
		"  arbor logger set --socket-path "+exampleSocket+" --level debug\n  arbor logger set -socketPath "+exampleSocket+" -level warn",
		func(fs *pflag.FlagSet) {
			setOpts.register(fs)
			fs.StringVar(&level, "level", "", "the new level: panic, fatal, error, warn, info, debug or trace")
		},
		func(cmd *cobra.Command) error {
			return setOpts.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.SetLogLevel(ctx, p, level)
			})
		})
	reset := adminLeaf("reset", "Set the server's log level back to its launch level",
		"Set the server's log level back to the one it was launched with (spire-server logger reset).",
		"  arbor logger reset --socket-path "+exampleSocket,
		func(fs *pflag.FlagSet) { resetOpts.register(fs) },
		func(cmd *cobra.Command) error {
			return resetOpts.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.ResetLogLevel(ctx, p)
			})
		})
	return adminGroup("logger", "Show and change a running server's log level",
		"Show and change the log level of a running server (logger.v1 on the admin socket).", get, set, reset)
}
