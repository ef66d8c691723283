package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/admin"
)

// adminCommands returns the admin CLI commands (entry, token, bundle, agent,
// healthcheck) that talk to a server's admin socket.
func adminCommands() []*cobra.Command {
	return []*cobra.Command{
		newEntryCommand(),
		newTokenCommand(),
		newBundleCommand(),
		newAgentCommand(),
		newFederationCommand(),
		newHealthcheckCommand(),
		newAuthorityCommand(),
		newLoggerCommand(),
	}
}

// adminOpts are the flags every admin command has.
type adminOpts struct {
	socket string
	output string
}

func (o *adminOpts) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.socket, "socket-path", "", "the server's admin socket (default $"+admin.SocketEnv+"; spire-server: -socketPath)")
	fs.StringVar(&o.output, "output", "pretty", "output format: pretty or json (protojson of the API response)")
}

// run dials the admin socket and calls fn; errors are prefixed with the
// command ("entry create: ...").
func (o *adminOpts) run(cmd *cobra.Command, fn func(context.Context, *admin.Client, admin.Printer) error) error {
	op := commandName(cmd)
	format, err := admin.ParseFormat(o.output)
	if err != nil {
		return fmt.Errorf("%s: --output: %w", op, err)
	}
	path, err := admin.SocketPath(o.socket, os.Getenv)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	c, err := admin.Dial(path)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer c.Close()
	return fn(cmd.Context(), c, admin.Printer{Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr(), Format: format})
}

// adminLeaf builds a runnable admin command that also accepts spire-server's
// flag spellings (see spireArgs).
func adminLeaf(use, short, long, example string, flags func(*pflag.FlagSet), run func(*cobra.Command) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Example: example}
	flags(cmd.Flags())
	// Cobra's own parser cannot read "-socketPath" (it takes it for -s -o ...),
	// so the command parses its flags itself after translating SPIRE spellings.
	cmd.DisableFlagParsing = true
	cmd.RunE = func(c *cobra.Command, args []string) error {
		fs := c.Flags()
		if err := fs.Parse(spireArgs(fs, args)); err != nil {
			return fmt.Errorf("%s: %w (see --help)", commandName(c), c.FlagErrorFunc()(c, err))
		}
		if help, _ := fs.GetBool("help"); help {
			return c.Help()
		}
		if rest := fs.Args(); len(rest) > 0 {
			return fmt.Errorf("%s: unexpected argument %q (flags start with --; see --help)", commandName(c), rest[0])
		}
		return run(c)
	}
	return cmd
}

// adminGroup builds a command that only holds subcommands; without one it
// prints its help, with an unknown one it fails.
func adminGroup(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%s: unknown command %q (see --help)", commandName(c), args[0])
		}
		return c.Help()
	}
	cmd.AddCommand(subs...)
	return cmd
}

// commandName is the command path without the program name ("entry create").
func commandName(c *cobra.Command) string {
	return strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
}

// spireNames maps spire-server's camelCase flag names to arbor's.
var spireNames = map[string]string{
	"socketPath":              "socket-path",
	"parentID":                "parent-id",
	"spiffeID":                "spiffe-id",
	"entryID":                 "entry-id",
	"x509SVIDTTL":             "x509-svid-ttl",
	"jwtSVIDTTL":              "jwt-svid-ttl",
	"federatesWith":           "federates-with",
	"entryExpiry":             "entry-expiry",
	"storeSVID":               "store-svid",
	"matchSelectorsOn":        "match",
	"matchFederatesWithOn":    "match-federates-with",
	"attestationType":         "attestation-type",
	"canReattest":             "can-reattest",
	"expiresBefore":           "expires-before",
	"trustDomain":             "trust-domain",
	"bundleEndpointURL":       "bundle-endpoint-url",
	"bundleEndpointProfile":   "profile",
	"endpointSpiffeID":        "endpoint-spiffe-id",
	"trustDomainBundlePath":   "trust-domain-bundle-path",
	"trustDomainBundleFormat": "trust-domain-bundle-format",
	"authorityID":             "authority-id",
	"subjectKeyID":            "subject-key-id",
}

// spireArgs rewrites spire-server style flags ("-socketPath x", "-ttl=60",
// "--parentID x") to the flags fs defines ("--socket-path x"). Arguments that
// name no flag of fs, single-letter shorthands and everything after "--" are
// left alone, as is the value following a flag that takes one.
func spireArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		single := !strings.HasPrefix(a, "--")
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if n, ok := spireNames[name]; ok {
			name = n
		}
		f := fs.Lookup(name)
		if f == nil || (single && len(name) == 1) {
			out = append(out, a)
			continue
		}
		if hasVal {
			out = append(out, "--"+name+"="+val)
			continue
		}
		out = append(out, "--"+name)
		if f.NoOptDefVal == "" && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		}
	}
	return out
}

// secondsValue is a TTL flag taking seconds or a duration.
type secondsValue struct{ p *int32 }

func (v secondsValue) String() string { return strconv.Itoa(int(*v.p)) }
func (v secondsValue) Type() string   { return "seconds" }
func (v secondsValue) Set(s string) error {
	n, err := admin.ParseSeconds(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

// unixTimeValue is an expiry flag taking Unix seconds or an RFC 3339 time.
type unixTimeValue struct{ p *int64 }

func (v unixTimeValue) String() string { return strconv.FormatInt(*v.p, 10) }
func (v unixTimeValue) Type() string   { return "unix-time" }
func (v unixTimeValue) Set(s string) error {
	n, err := admin.ParseUnixTime(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

// optionalBool returns a pointer to the flag's value when it was given, else nil.
func optionalBool(fs *pflag.FlagSet, name string) *bool {
	if !fs.Changed(name) {
		return nil
	}
	b, _ := fs.GetBool(name)
	return &b
}

func newTokenCommand() *cobra.Command {
	var o adminOpts
	var ttl int32 = 600
	var spiffeID, token string
	gen := adminLeaf("generate", "Create a single-use join token for an agent",
		`Create a join token an agent uses once to attest (node attestor join_token).
The agent's SPIFFE ID becomes spiffe://<trust domain>/spire/agent/join_token/<token>.
With --spiffe-id, an entry also maps that agent to the given SPIFFE ID, so
workload entries can use it as their parent.

Prints "Token: <value>", like spire-server token generate.`,
		`  arbor token generate --socket-path examples/.arbor/single-server/root/admin.sock
  arbor token generate --ttl 1h --spiffe-id spiffe://example.org/host/web-1
  # spire-server spelling works too:
  arbor token generate -socketPath examples/.arbor/single-server/root/admin.sock -spiffeID spiffe://example.org/host -ttl 3600`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.Var(secondsValue{&ttl}, "ttl", "token lifetime in seconds or as a duration (1h)")
			fs.StringVar(&spiffeID, "spiffe-id", "", "SPIFFE ID to give the agent that uses the token (creates a node-alias entry)")
			fs.StringVar(&token, "token", "", "token value to use instead of a random one")
		},
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.GenerateToken(ctx, p, ttl, spiffeID, token)
			})
		})
	return adminGroup("token", "Manage join tokens", "Join tokens let an agent attest to a server once (node attestor join_token).", gen)
}

func newHealthcheckCommand() *cobra.Command {
	var o adminOpts
	var shallow, verbose bool
	return adminLeaf("healthcheck", "Check that a server is healthy",
		`Ask the server on the admin socket whether it is healthy: its gRPC health
service must report SERVING and, unless --shallow, it must read its datastore
and hold a trust bundle with an X.509 authority. Prints "Server is healthy."
and exits 0, or prints one line saying what is wrong and exits 1.`,
		`  arbor healthcheck --socket-path examples/.arbor/single-server/root/admin.sock
  ARBOR_ADMIN_SOCKET=examples/.arbor/single-server/root/admin.sock arbor healthcheck --shallow`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.BoolVar(&shallow, "shallow", false, "only ask the health service, skip the datastore and bundle checks")
			fs.BoolVar(&verbose, "verbose", false, "print each check as it runs")
		},
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.Healthcheck(ctx, p, shallow, verbose)
			})
		})
}
