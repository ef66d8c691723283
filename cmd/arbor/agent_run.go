package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/topology"
)

// DefaultAgentSocket is the Workload API socket when --socket-path is unset.
const defaultAgentSocket = "/tmp/arbor-agent/public/api.sock"

func newAgentRunCommand() *cobra.Command {
	var (
		topoPath, node, serverAddr, trustDomain, bundlePath, bundleURL string
		joinToken, popCert, popKey, popInter, dataDir, socketPath      string
		healthAddr, logLevel, logFormat                                string
		insecureBootstrap, unixPaths                                   bool
		syncInterval                                                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a node agent: attest, cache SVIDs, serve the Workload API",
		Long: `Run an agent attached to a server. With --topology and --node the agent
connects to that server block's address in the file's trust domain; without a
topology give --server-address and --trust-domain. The first start needs a
bootstrap bundle (--trust-bundle FILE or --trust-bundle-url) and a node
attestor (--join-token, or --x509pop-cert and --x509pop-key); later starts
reuse the agent SVID stored in --data-dir and do not attest again.

Workloads call the SPIFFE Workload API on --socket-path; they are attested by
their Unix credentials (unix:uid, unix:gid, unix:user, unix:group, and with
--unix-workload-path also unix:path and unix:sha256).`,
		Example: `  arbor agent run --topology prod.hcl --node us-east --trust-bundle bundle.pem --join-token $TOKEN
  arbor agent run --server-address 10.0.0.5:8081 --trust-domain example.org \
      --trust-bundle bundle.pem --x509pop-cert node.pem --x509pop-key node-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg := agent.Config{
				ServerAddress: serverAddr, TrustBundleURL: bundleURL, InsecureBootstrap: insecureBootstrap,
				DataDir: dataDir, SocketPath: socketPath, JoinToken: joinToken, SyncInterval: syncInterval,
				HealthAddr: healthAddr, Logger: log,
			}
			if topoPath != "" {
				file, diags := topology.ParseFile(topoPath)
				if diags.HasErrors() {
					return fmt.Errorf("invalid topology:\n%s", topology.FormatDiagnostics(diags, nil))
				}
				srv, err := file.Server(node)
				if err != nil {
					return err
				}
				cfg.TrustDomain = file.TrustDomain
				if cfg.ServerAddress == "" {
					cfg.ServerAddress = srv.Address
				}
				if cfg.DataDir == "" {
					cfg.DataDir = filepath.Join(filepath.Dir(topoPath), ".arbor", "agent-"+node)
				}
			} else if node != "" {
				return errors.New("--node needs --topology")
			}
			if trustDomain != "" {
				td, err := spiffeid.TrustDomainFromString(trustDomain)
				if err != nil {
					return fmt.Errorf("--trust-domain: %w", err)
				}
				cfg.TrustDomain = td
			}
			if cfg.DataDir == "" {
				cfg.DataDir = ".arbor/agent"
			}
			if bundlePath != "" {
				data, err := os.ReadFile(bundlePath)
				if err != nil {
					return fmt.Errorf("--trust-bundle: %w", err)
				}
				if cfg.TrustBundle, err = agent.ParseBundlePEM(data); err != nil {
					return fmt.Errorf("--trust-bundle %s: %w", bundlePath, err)
				}
			}
			if popCert != "" || popKey != "" {
				cfg.X509PoP = &agent.X509PoPConfig{CertPath: popCert, KeyPath: popKey, IntermediatesPath: popInter}
			}
			att, err := unix.New(unix.Config{DiscoverWorkloadPath: unixPaths})
			if err != nil {
				return err
			}
			cfg.WorkloadAttestors = []agent.WorkloadAttestor{att}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&topoPath, "topology", "", "topology file (HCL) naming the server to attach to")
	fs.StringVar(&node, "node", "", "server block of the topology to attach to")
	fs.StringVar(&serverAddr, "server-address", "", "server agent API host:port (default: the topology server's address)")
	fs.StringVar(&trustDomain, "trust-domain", "", "trust domain (default: the topology's)")
	fs.StringVar(&bundlePath, "trust-bundle", "", "PEM file of the server's X.509 roots for the first attestation")
	fs.StringVar(&bundleURL, "trust-bundle-url", "", "HTTPS URL serving the bootstrap bundle as PEM")
	fs.BoolVar(&insecureBootstrap, "insecure-bootstrap", false, "do not verify the server at the first attestation (tests only)")
	fs.StringVar(&joinToken, "join-token", "", "join token for the first attestation")
	fs.StringVar(&popCert, "x509pop-cert", "", "x509pop node certificate (PEM, optionally followed by intermediates)")
	fs.StringVar(&popKey, "x509pop-key", "", "x509pop node private key (PEM)")
	fs.StringVar(&popInter, "x509pop-intermediates", "", "x509pop intermediates (PEM), optional")
	fs.StringVar(&dataDir, "data-dir", "", "directory for the agent SVID, key and bundle (default .arbor/agent)")
	fs.StringVar(&socketPath, "socket-path", defaultAgentSocket, "Workload API Unix socket")
	fs.DurationVar(&syncInterval, "sync-interval", agent.DefaultSyncInterval, "how often to sync entries and bundles")
	fs.StringVar(&healthAddr, "health-listen", "", "address for /live, /ready and /metrics (off when empty)")
	fs.BoolVar(&unixPaths, "unix-workload-path", false, "add unix:path and unix:sha256 selectors (needs access to /proc/<pid>/exe)")
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
