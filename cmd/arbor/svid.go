package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/svidcli"
)

// svidOpts are the flags every `arbor svid` command has.
type svidOpts struct {
	socket  string
	output  string
	timeout time.Duration
}

func (o *svidOpts) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.socket, "socket-path", "", "the agent's Workload API socket (default $"+svidcli.SocketEnv+", else "+svidcli.DefaultSocketPath+")")
	fs.StringVar(&o.output, "output", "pretty", "output format: pretty or json")
	fs.DurationVar(&o.timeout, "timeout", svidcli.DefaultTimeout, "give up when the Workload API has not answered within this time")
}

func (o *svidOpts) options(op string) (svidcli.Options, error) {
	format, err := svidcli.ParseFormat(o.output)
	if err != nil {
		return svidcli.Options{}, fmt.Errorf("%s: --output: %w", op, err)
	}
	addr, err := svidcli.Address(o.socket, os.Getenv)
	if err != nil {
		return svidcli.Options{}, fmt.Errorf("%s: %w", op, err)
	}
	return svidcli.Options{Addr: addr, Timeout: o.timeout, Format: format}, nil
}

func newSVIDCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "svid",
		Short: "Fetch and validate SVIDs through an agent's Workload API",
		Long: `The svid commands are what a workload sees: they call the SPIFFE Workload
API of the agent on this machine (arbor's or spire-agent's) as this process,
so they show which identities the agent gives to it.

The socket is --socket-path, else $` + svidcli.SocketEnv + ` (an address such as
unix:///run/agent.sock), else ` + svidcli.DefaultSocketPath + `.`,
	}
	fetch := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch this process's X509-SVIDs or JWT-SVIDs",
	}
	fetch.AddCommand(newSVIDFetchX509Command(), newSVIDFetchJWTCommand())
	cmd.AddCommand(fetch, newSVIDValidateCommand(), newSVIDWatchCommand())
	return cmd
}

func newSVIDFetchX509Command() *cobra.Command {
	var o svidOpts
	var writeDir string
	cmd := &cobra.Command{
		Use:   "x509",
		Short: "Fetch X509-SVIDs and bundles, print them and optionally write them to disk",
		Long: `Fetches this process's X509-SVIDs and trust bundles and prints each SVID's
SPIFFE ID, hint and validity. With --write DIR it writes, like
spire-agent api fetch x509 -write, for each SVID i: svid.<i>.pem (chain, leaf
first), svid.<i>.key (PKCS#8 key, mode 0600), bundle.<i>.pem and
federated_bundle.<i>.<j>.pem.`,
		Example: `  # Show the identities the local agent gives this user
  arbor svid fetch x509

  # Write certificate, key and bundle for a program that reads files
  arbor svid fetch x509 --write /run/myapp/certs

  # Talk to a spire-agent, print JSON
  arbor svid fetch x509 --socket-path /tmp/spire-agent/public/api.sock --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := o.options("svid fetch x509")
			if err != nil {
				return err
			}
			return svidcli.FetchX509(cmd.Context(), cmd.OutOrStdout(), opts, writeDir)
		},
	}
	o.register(cmd.Flags())
	cmd.Flags().StringVar(&writeDir, "write", "", "also write the SVIDs, keys and bundles to this directory")
	return cmd
}

func newSVIDFetchJWTCommand() *cobra.Command {
	var o svidOpts
	var audiences []string
	var spiffeID string
	cmd := &cobra.Command{
		Use:   "jwt",
		Short: "Fetch JWT-SVIDs for an audience and print the tokens and their claims",
		Example: `  # A token for calls to the billing service
  arbor svid fetch jwt --audience spiffe://example.org/billing

  # Only the token of one identity, as JSON
  arbor svid fetch jwt --audience billing --spiffe-id spiffe://example.org/web --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := o.options("svid fetch jwt")
			if err != nil {
				return err
			}
			return svidcli.FetchJWT(cmd.Context(), cmd.OutOrStdout(), opts, audiences, spiffeID)
		},
	}
	o.register(cmd.Flags())
	cmd.Flags().StringSliceVar(&audiences, "audience", nil, "audience of the token (required; repeat or comma-separate for several)")
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "fetch the token of this SPIFFE ID only")
	_ = cmd.MarkFlagRequired("audience")
	return cmd
}

func newSVIDValidateCommand() *cobra.Command {
	var o svidOpts
	var audience, token, tokenFile string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Validate a JWT-SVID through the Workload API",
		Long: `Asks the agent to validate a JWT-SVID for an audience and prints its SPIFFE ID
and claims. A token the agent rejects (bad signature, wrong audience, expired,
malformed) prints one line with the reason and exits with status 1.`,
		Example: `  # Validate a token received by the billing service
  arbor svid validate --audience spiffe://example.org/billing --token "$TOKEN"

  # Read the token from a file, or from standard input with -
  arbor svid fetch jwt --audience billing --output json | jq -r '.[0].token' |
      arbor svid validate --audience billing --token-file -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const op = "svid validate"
			opts, err := o.options(op)
			if err != nil {
				return err
			}
			t, err := svidcli.ReadToken(token, tokenFile, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return svidcli.Validate(cmd.Context(), cmd.OutOrStdout(), opts, audience, t)
		},
	}
	o.register(cmd.Flags())
	cmd.Flags().StringVar(&audience, "audience", "", "the audience the token must be for (required)")
	cmd.Flags().StringVar(&token, "token", "", "the JWT-SVID")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the JWT-SVID from this file (- for standard input)")
	_ = cmd.MarkFlagRequired("audience")
	cmd.MarkFlagsMutuallyExclusive("token", "token-file")
	cmd.MarkFlagsOneRequired("token", "token-file")
	return cmd
}
