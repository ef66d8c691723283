package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/svidcli"
)

func newSVIDWatchCommand() *cobra.Command {
	var (
		configPath, socket, healthListen, logLevel, logFormat string
		timeout                                               time.Duration
		once                                                  bool
		tf                                                    svidcli.TargetFlags
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Keep SVIDs, keys and bundles written as files and reload the programs that read them",
		Long: `Runs until stopped and keeps this process's X509-SVID (certificate chain), its
private key, the trust bundle and optionally a JWT-SVID written as PEM files,
for programs that read files: nginx, PostgreSQL, HAProxy, ... Whenever the
agent rotates the SVID or the bundle changes, the files are replaced
atomically (all staged beside their targets, then renamed: a failed write
leaves every old file intact) and the program is told: --exec runs a command
(/bin/sh -c), --signal sends a signal to --pid or to the pid in --pid-file.

One SVID is described with flags; several (one process for a web server and
its database, say) with --config FILE, an HCL file of svid "NAME" blocks:

  socket_path   = "/run/arbor/agent.sock"
  health_listen = "127.0.0.1:8089"

  svid "nginx" {
    spiffe_id      = "spiffe://example.org/web"
    cert_file      = "/etc/nginx/spiffe/svid.pem"
    key_file       = "/etc/nginx/spiffe/svid.key"
    bundle_file    = "/etc/nginx/spiffe/bundle.pem"
    federated_with = ["partner.example"]   # also trust these ("*": all)
    reload_signal  = "HUP"
    pid_file       = "/run/nginx.pid"
  }

  svid "db" {
    spiffe_id      = "spiffe://example.org/db"
    cert_file      = "/var/lib/postgresql/spiffe/server.crt"
    key_file       = "/var/lib/postgresql/spiffe/server.key"
    bundle_file    = "/var/lib/postgresql/spiffe/ca.crt"
    owner          = "postgres"             # chown every file
    reload_command = "pg_ctlcluster 15 main reload"
    jwt {                                   # optional JWT-SVID, renewed at half-life
      audience = ["spiffe://example.org/billing"]
      file     = "/var/lib/postgresql/spiffe/jwt.token"
    }
  }

Other attributes: hint (select the SVID by its entry's hint instead of
spiffe_id; with neither, the agent's first SVID), combined_file (chain and key
in one file, as HAProxy's crt reads it), group, key_mode ("0600", the default,
or "0640"), reload_timeout ("30s"), pid. Relative paths are relative to the
file's directory. Keys and JWTs are written 0600, certificates 0644.

Failures (a directory that does not exist, a reload command that exits
non-zero, an agent that went away) are logged, retried with backoff up to
30s, and make /ready on --health-listen answer 503 with the reason, while
the files keep their last good content; /live answers 200 while it runs.
With --once it writes every SVID once, reloads, and exits (status 1 if that
did not succeed within --timeout).`,
		Example: `  # nginx: keep its certificate, key and CA file, reload with SIGHUP
  arbor svid watch --spiffe-id spiffe://example.org/web \
      --cert /etc/nginx/spiffe/svid.pem --key /etc/nginx/spiffe/svid.key \
      --bundle /etc/nginx/spiffe/bundle.pem --signal HUP --pid-file /run/nginx.pid

  # PostgreSQL: files owned by postgres, reloaded with a command
  arbor svid watch --cert server.crt --key server.key --bundle ca.crt \
      --owner postgres --exec "pg_ctlcluster 15 main reload"

  # HAProxy: chain and key in one file, bundle with every federated domain
  arbor svid watch --combined /etc/haproxy/svid.pem --bundle /etc/haproxy/ca.pem \
      --federated-with '*' --exec "systemctl reload haproxy"

  # A JWT-SVID for an audience, kept in a file
  arbor svid watch --jwt-audience spiffe://example.org/billing --jwt-file /run/app/jwt

  # Several SVIDs from one file, with a health endpoint
  arbor svid watch --config /etc/arbor/watch.hcl --health-listen 127.0.0.1:8089

  # Write once and exit (an init container)
  arbor svid watch --once --timeout 1m --cert svid.pem --key svid.key --bundle bundle.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const op = "svid watch"
			log, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			var cfg *svidcli.WatchConfig
			switch {
			case configPath != "" && tf.Set():
				return fmt.Errorf("%s: give --config or the flags of one SVID (--cert, --key, ...), not both", op)
			case configPath != "":
				if cfg, err = svidcli.LoadWatchConfig(configPath); err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
			case !tf.Set():
				return fmt.Errorf("%s: nothing to write: give --cert and --key (and --bundle), --combined, --jwt-file, or --config FILE (see arbor svid watch --help)", op)
			default:
				t, err := tf.Target()
				if err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
				cfg = &svidcli.WatchConfig{Targets: []svidcli.Target{t}}
			}
			if socket != "" || cfg.Addr == "" {
				if cfg.Addr, err = svidcli.Address(socket, os.Getenv); err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
			}
			if cmd.Flags().Changed("health-listen") {
				cfg.HealthListen = healthListen
			}
			cfg.Logger, cfg.Once = log, once
			ctx := cmd.Context()
			if once {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return svidcli.Watch(ctx, *cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configPath, "config", "", "HCL file of svid \"NAME\" blocks (several SVIDs); instead of the flags below")
	fs.StringVar(&socket, "socket-path", "", "the agent's Workload API socket (default: the file's socket_path, $"+svidcli.SocketEnv+", else "+svidcli.DefaultSocketPath+")")
	fs.StringVar(&healthListen, "health-listen", "", "serve /live and /ready on this address (host:port; default: the file's health_listen, else off)")
	fs.BoolVar(&once, "once", false, "write every SVID once, reload, and exit")
	fs.DurationVar(&timeout, "timeout", svidcli.DefaultTimeout, "with --once: give up when the files are not written within this time")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")

	fs.StringVar(&tf.Name, "name", "svid", "the SVID's name in logs and /ready")
	fs.StringVar(&tf.SPIFFEID, "spiffe-id", "", "the SVID to keep (default: the agent's first SVID for this process)")
	fs.StringVar(&tf.Hint, "hint", "", "select the SVID by its entry's hint instead")
	fs.StringVar(&tf.CertFile, "cert", "", "write the certificate chain, leaf first, to this file (0644)")
	fs.StringVar(&tf.KeyFile, "key", "", "write the private key (PKCS#8) to this file (0600)")
	fs.StringVar(&tf.BundleFile, "bundle", "", "write the trust domain's CA certificates to this file (0644)")
	fs.StringVar(&tf.Combined, "combined", "", "write chain and key in one file (HAProxy's crt; mode of --key-mode)")
	fs.StringSliceVar(&tf.FederatedWith, "federated-with", nil, "also put these federated trust domains' CAs into --bundle ('*': all; repeat or comma-separate)")
	fs.StringSliceVar(&tf.JWTAudiences, "jwt-audience", nil, "fetch a JWT-SVID for this audience (repeat for extra audiences)")
	fs.StringVar(&tf.JWTFile, "jwt-file", "", "write the JWT-SVID to this file (0600), renewed at half its lifetime")
	fs.StringVar(&tf.Owner, "owner", "", "chown the files to this user (name or uid; its group too unless --group)")
	fs.StringVar(&tf.Group, "group", "", "chown the files to this group (name or gid)")
	fs.StringVar(&tf.KeyMode, "key-mode", "", "mode of the key files: 0600 (default) or 0640")
	fs.StringVar(&tf.Exec, "exec", "", "after every change run this command with /bin/sh -c ($ARBOR_SVID_NAME, $ARBOR_SPIFFE_ID set)")
	fs.DurationVar(&tf.ReloadTimeout, "reload-timeout", svidcli.DefaultReloadTimeout, "kill --exec when it has not finished within this time")
	fs.StringVar(&tf.Signal, "signal", "", "after every change send this signal (HUP, USR1, ...) to --pid or --pid-file")
	fs.IntVar(&tf.PID, "pid", 0, "the process to signal")
	fs.StringVar(&tf.PIDFile, "pid-file", "", "read the process to signal from the first line of this file at each reload")
	return cmd
}
