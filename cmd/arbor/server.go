package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/topology"
)

func newServerCommand() *cobra.Command {
	var topoPath, node, logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "server --topology FILE --node NAME",
		Short: "Run one server of a topology (any tier)",
		Long: `Run the server block NAME of the topology file FILE. The server listens for
agents and downstream servers on its listen address (gRPC over TLS, SPIRE's
server API), for administrators on its admin Unix socket, and for health
checks and Prometheus metrics on its health address (/live, /ready, /metrics).
It stops gracefully on SIGINT or SIGTERM.`,
		Example: `  arbor server --topology examples/quickstart.hcl --node root
  arbor server --topology prod.hcl --node us-east --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, diags := topology.ParseFile(topoPath)
			if diags.HasErrors() {
				return fmt.Errorf("invalid topology:\n%s", topology.FormatDiagnostics(diags, nil))
			}
			srv, err := file.Server(node)
			if err != nil {
				return err
			}
			if logLevel == "" {
				logLevel = srv.LogLevel
			}
			if logFormat == "" {
				logFormat = srv.LogFormat
			}
			log, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg, err := serverConfig(file, srv)
			if err != nil {
				return err
			}
			cfg.Logger = log
			s, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&topoPath, "topology", "", "topology file (HCL)")
	cmd.Flags().StringVar(&node, "node", "", "name of the server block to run")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "debug, info, warn or error (default: the topology's, else info)")
	cmd.Flags().StringVar(&logFormat, "log-format", "", "text or json (default: the topology's, else text)")
	cmd.MarkFlagRequired("topology")
	cmd.MarkFlagRequired("node")
	return cmd
}

// serverConfig translates a topology server block into the server's Config.
func serverConfig(file *topology.File, s *topology.Server) (server.Config, error) {
	keyType, err := ca.ParseKeyType(string(s.KeyType))
	if err != nil {
		return server.Config{}, err
	}
	jwtKeyType, err := ca.ParseKeyType(string(s.JWTKeyType))
	if err != nil {
		return server.Config{}, err
	}
	if s.Parent != "" {
		return server.Config{}, fmt.Errorf("server %q has parent %q: downstream tiers are not supported by this build yet", s.Name, s.Parent)
	}
	cfg := server.Config{
		Name:           s.Name,
		TrustDomain:    file.TrustDomain,
		ListenAddr:     s.Listen,
		AdminSocket:    s.AdminSocket,
		HealthAddr:     s.HealthListen,
		StateDir:       s.StateDir,
		Datastore:      s.Datastore.Kind,
		SQLitePath:     s.Datastore.Path,
		PostgresDSN:    s.Datastore.DSN,
		CAKeyType:      keyType,
		JWTKeyType:     jwtKeyType,
		CATTL:          s.CATTL,
		X509SVIDTTL:    s.X509SVIDTTL,
		JWTSVIDTTL:     s.JWTSVIDTTL,
		CAKeysInMemory: s.CAKeyStorage == topology.CAKeyStorageMemory,
		JWTIssuer:      s.JWTIssuer,
	}
	for _, a := range s.NodeAttestors {
		switch a.Kind {
		case topology.NodeAttestorJoinToken:
			cfg.JoinToken = true
			cfg.DefaultJoinTokenTTL = a.JoinToken.DefaultTTL
		case topology.NodeAttestorX509PoP:
			cfg.X509PoP = &server.X509PoPConfig{CABundlePaths: a.X509PoP.CABundlePaths, AgentPathTemplate: a.X509PoP.AgentPathTemplate}
		}
	}
	return cfg, nil
}
