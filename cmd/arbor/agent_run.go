package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/tier"
)

// DefaultAgentSocket is the Workload API socket when --socket-path is unset.
const defaultAgentSocket = "/tmp/arbor-agent/public/api.sock"

func newAgentRunCommand() *cobra.Command {
	var (
		topoPath, node, attach, serverAddr, trustDomain, bundlePath, bundleURL string
		dataDir, socketPath, healthAddr, logLevel, logFormat                   string
		attest                                                                 agentAttestorFlags
		vars                                                                   topologyVars
		insecureBootstrap                                                      bool
		workloads                                                              workloadAttestorFlags
		sds                                                                    agentSDSFlags
		syncInterval                                                           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a node agent: attest, cache SVIDs, serve the Workload API",
		Long: `Run an agent attached to a server.

With --topology FILE --node NAME it is the co-located agent of server block
NAME, as the block's agent { } says: attested to NAME's parent (or its
upstream "spire" server) with the block's node_attestor, on its socket_path
and data_dir, syncing every sync_interval. With --topology FILE --attach NAME
it is an agent for workloads of server NAME: it connects to NAME's address and
syncs as the defaults block says. Without a topology give --server-address
and --trust-domain. Flags given explicitly override what the topology says.

The first start needs a bootstrap bundle (--trust-bundle FILE or
--trust-bundle-url) and a node attestor; later starts reuse the agent SVID
stored in the data directory. The attestor is the agent block's node_attestor,
or the one the flags name (they replace the block's): --node-attestor KIND, or
just the flags of one kind, which imply it:

  join_token  --join-token-file FILE (or --join-token TOKEN)
  x509pop     --x509pop-cert FILE --x509pop-key FILE [--x509pop-intermediates FILE]
  aws_iid     --node-attestor aws_iid [--ec2-metadata-endpoint URL]
  k8s_psat    --k8s-cluster NAME [--k8s-token-path FILE]
  gcp_iit     --node-attestor gcp_iit [--gcp-service-account EMAIL] [--gcp-identity-token-host HOST]
  azure_msi   --node-attestor azure_msi [--azure-resource-id URI] [--azure-metadata-endpoint URL]

Each sends what SPIRE's agent plugin of the same name sends, so the agent
attests to a spire-server as to an arbor server. aws_iid, gcp_iit and
azure_msi attest once per machine: an agent that lost its SVID is refused until
it is evicted at its server. See docs/attestation.md.

Give a join token as a file (--join-token-file, mode 0600): the agent reads it
when it attests and removes it once the token is spent. --join-token TOKEN
works too, but puts the token on the command line, where every local user can
read it (ps, /proc).

--server-address takes one host:port (a server, a load balancer, a DNS name
with several records) or a comma list of the tier's servers, e.g.
--server-address 10.0.0.5:8081,10.0.0.6:8081: the agent picks one at random,
stays on it while it answers and moves to another on failure, without
attesting again (the
servers of a tier share their attested agents). With --topology the list is
the server block's address (every replica's listen address by default).

One agent at a time runs on a data directory (it holds a lock file in it,
arbor.lock) and on a socket: a second one is refused at once with the first
one's PID. A socket file nothing answers on, left by an agent that died, is
replaced.

Workloads call the SPIFFE Workload API on the socket; they are attested by
their Unix credentials (unix:uid, unix:gid, unix:user, unix:group, and with
--unix-workload-path also unix:path and unix:sha256), and with
--workload-attestor k8s by their pod (k8s:ns, k8s:sa, k8s:pod-name,
k8s:pod-uid, k8s:pod-label:K:V, k8s:container-name, k8s:container-image,
k8s:node-name, ...; from the kubelet of the agent's node), with
--workload-attestor docker by their container (docker:label:K:V,
docker:image_id, docker:env:K=V for the --docker-env-key keys; from the Docker
Engine API). The selectors are SPIRE's, so entries written for spire-agent
match here.

The same socket serves Envoy's Secret Discovery Service (SDS v3) as
spire-agent does: TLS certificates named by SPIFFE ID and "default", validation
contexts named by trust domain ID, "ROOTCA" and "ALL" (the --sds-* flags, or
the agent block's sds { }, rename them; --no-sds turns SDS off). See
docs/workload.md, "Envoy SDS".`,
		Example: `  # The agent beside server "us-east", attested to its parent; the join token
  # goes in a file of mode 0600, not on the command line
  (umask 077; arbor token generate --socket-path parent-admin.sock | sed -n 's/^Token: //p' > us-east.token)
  arbor agent run --topology prod.hcl --node us-east --trust-bundle parent-bundle.pem \
      --join-token-file us-east.token

  # An agent for workloads of server "us-east"
  arbor agent run --topology prod.hcl --attach us-east --trust-bundle bundle.pem \
      --join-token-file node.token --socket-path /run/arbor/api.sock

  # The same with a variable of the topology set
  arbor agent run --topology prod.hcl --attach us-east --var region=us-east-1 \
      --trust-bundle bundle.pem --join-token-file node.token

  arbor agent run --server-address 10.0.0.5:8081 --trust-domain example.org \
      --trust-bundle bundle.pem --x509pop-cert node.pem --x509pop-key node-key.pem

  # Three servers of one tier (replicas on one PostgreSQL): the agent stays on
  # one while it answers and moves to another without attesting again
  arbor agent run --server-address 10.0.0.5:8081,10.0.0.6:8081,10.0.0.7:8081 \
      --trust-domain example.org --trust-bundle bundle.pem --join-token-file node.token

  # On an EC2 instance: its instance identity document
  arbor agent run --server-address spire.internal:8081 --trust-domain example.org \
      --trust-bundle bundle.pem --node-attestor aws_iid

  # In a Kubernetes pod: its projected service account token
  arbor agent run --server-address spire.internal:8081 --trust-domain example.org \
      --trust-bundle bundle.pem --k8s-cluster eks-prod

  # A DaemonSet agent attesting its node's pods through the kubelet
  arbor agent run --server-address spire.internal:8081 --trust-domain example.org \
      --trust-bundle bundle.pem --k8s-cluster eks-prod --workload-attestor k8s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			var cfg agent.Config
			var fromFile tier.WorkloadAttestors
			switch {
			case topoPath == "" && (node != "" || attach != ""):
				return errors.New("--node and --attach need --topology")
			case topoPath != "" && (node == "") == (attach == ""):
				return errors.New("with --topology give --node NAME (the agent of server NAME) or --attach NAME (an agent for its workloads)")
			case topoPath != "":
				file, err := parseTopology(topoPath, "--topology", vars)
				if err != nil {
					return err
				}
				if node != "" {
					cfg, err = tier.AgentConfig(file, node)
					if err == nil {
						fromFile, err = tier.WorkloadAttestorsOf(file, node)
					}
				} else {
					cfg, err = tier.WorkloadAgentConfig(file, attach)
				}
				if err != nil {
					return err
				}
			}
			// Explicit flags win over the topology; unset ones fill what it
			// leaves empty.
			set := func(name string, dst *string, v string) {
				if cmd.Flags().Changed(name) || *dst == "" {
					*dst = v
				}
			}
			// --server-address replaces the topology's addresses (one or a
			// comma list: the agent splits it).
			if cmd.Flags().Changed("server-address") {
				cfg.ServerAddress, cfg.ServerAddresses = serverAddr, nil
			} else if cfg.ServerAddress == "" && len(cfg.ServerAddresses) == 0 {
				cfg.ServerAddress = serverAddr
			}
			set("data-dir", &cfg.DataDir, dataDir)
			set("socket-path", &cfg.SocketPath, socketPath)
			if err := attest.apply(cmd.Flags(), &cfg); err != nil {
				return err
			}
			sds.apply(cmd.Flags(), &cfg)
			if cmd.Flags().Changed("sync-interval") || cfg.SyncInterval == 0 {
				cfg.SyncInterval = syncInterval
			}
			if trustDomain != "" {
				td, err := spiffeid.TrustDomainFromString(trustDomain)
				if err != nil {
					return fmt.Errorf("--trust-domain: %w", err)
				}
				cfg.TrustDomain = td
			}
			cfg.TrustBundleURL, cfg.InsecureBootstrap, cfg.HealthAddr, cfg.Logger = bundleURL, insecureBootstrap, healthAddr, log
			if bundlePath != "" {
				data, err := os.ReadFile(bundlePath)
				if err != nil {
					return fmt.Errorf("--trust-bundle: %w", err)
				}
				if cfg.TrustBundle, err = agent.ParseBundlePEM(data); err != nil {
					return fmt.Errorf("--trust-bundle %s: %w", bundlePath, err)
				}
			}
			atts, closer, err := workloads.build(cmd.Flags(), fromFile, log)
			if err != nil {
				return err
			}
			defer closer.Close()
			cfg.WorkloadAttestors = atts
			if err := checkBootstrap(cfg); err != nil {
				return err
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return explainRunError(a.Run(cmd.Context()), cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&topoPath, "topology", "", "topology file (HCL)")
	fs.StringVar(&node, "node", "", "run the co-located agent of this server block (its agent { } block)")
	fs.StringVar(&attach, "attach", "", "run an agent for workloads of this server block")
	addVarFlag(cmd, &vars)
	fs.StringVar(&serverAddr, "server-address", "", "server agent API host:port, or a comma list of the tier's servers (default: from the topology)")
	fs.StringVar(&trustDomain, "trust-domain", "", "trust domain (default: the topology's)")
	fs.StringVar(&bundlePath, "trust-bundle", "", "PEM file of the server's X.509 roots for the first attestation")
	fs.StringVar(&bundleURL, "trust-bundle-url", "", "HTTPS URL serving the bootstrap bundle as PEM")
	fs.BoolVar(&insecureBootstrap, "insecure-bootstrap", false, "do not verify the server at the first attestation (tests only)")
	attest.register(fs)
	fs.StringVar(&dataDir, "data-dir", ".arbor/agent", "directory for the agent SVID, key and bundle (default with a topology: the agent block's data_dir, or with --attach .arbor/<file-stem>/agent-NAME beside the file)")
	fs.StringVar(&socketPath, "socket-path", defaultAgentSocket, "Workload API Unix socket (default with --node: the agent block's socket_path)")
	fs.DurationVar(&syncInterval, "sync-interval", agent.DefaultSyncInterval, "how often to sync entries and bundles (default with a topology: its sync_interval)")
	fs.StringVar(&healthAddr, "health-listen", "", "address for /live, /ready and /metrics (off when empty)")
	workloads.register(fs)
	sds.register(fs)
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

func newAgentHealthcheckCommand() *cobra.Command {
	var healthAddr, socketPath string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Check that a local agent is healthy",
		Long: `Exit 0 when the agent is healthy: with --health-addr its /ready endpoint answers
200; otherwise its Workload API socket answers.`,
		Example: `  arbor agent healthcheck --socket-path /tmp/arbor-agent/public/api.sock
  arbor agent healthcheck --health-addr 127.0.0.1:8088`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := agent.Healthcheck(cmd.Context(), healthAddr, socketPath); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Agent is healthy.")
			return nil
		},
	}
	cmd.Flags().StringVar(&healthAddr, "health-addr", "", "the agent's health address (host:port)")
	cmd.Flags().StringVar(&socketPath, "socket-path", defaultAgentSocket, "the agent's Workload API socket")
	return cmd
}

// checkBootstrap refuses, before anything starts, an agent that has never
// attested (no agent SVID in its data directory) and has no way to verify
// the server at its first attestation, naming the flags that give one.
func checkBootstrap(cfg agent.Config) error {
	if len(cfg.TrustBundle) > 0 || cfg.TrustBundleURL != "" || cfg.InsecureBootstrap || agent.Attested(cfg.DataDir) {
		return nil
	}
	return fmt.Errorf("no bootstrap bundle to verify the server at the first attestation (%s holds no agent SVID yet): "+
		"give --trust-bundle FILE (the server's X.509 roots as PEM: arbor bundle show --socket-path ADMIN_SOCKET > bundle.pem), "+
		"--trust-bundle-url URL, or --insecure-bootstrap (tests only)", cfg.DataDir)
}

// explainRunError adds to the error an agent stops with what to do about
// it: a join-token agent the server no longer knows (evicted, or its SVID
// expired while the server was out of reach) cannot attest again with the
// token it spent.
func explainRunError(err error, cfg agent.Config) error {
	joinToken := cfg.NodeAttestor == nil && cfg.X509PoP == nil
	if errors.Is(err, agent.ErrCannotReattest) && joinToken {
		return fmt.Errorf("%w; a join token attests once: generate a new join token (arbor token generate --socket-path ADMIN_SOCKET of the server) "+
			"and start the agent again with --join-token-file FILE", err)
	}
	return err
}
