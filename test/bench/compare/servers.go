package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborid/arbor/test/bench/benchproc"
)

// server is a running arbor or spire-server process.
type server struct {
	kind string
	*benchproc.Process
}

// serverSpec is what starting one server needs.
type serverSpec struct {
	kind     string // "arbor" or "spire"
	backend  string // "sqlite" or "postgres"
	arborBin string
	spireBin string // directory holding spire-server
	pgBase   string // base DSN; a fresh database is created per server
	logDir   string
	name     string // unique, for logs and database names
}

// createDatabase makes a fresh PostgreSQL database and returns its URL and a
// func that drops it.
func createDatabase(ctx context.Context, base, prefix string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to PostgreSQL (start it: pg_ctlcluster 15 main start): %w", err)
	}
	defer conn.Close(ctx)
	buf := make([]byte, 4)
	rand.Read(buf)
	name := prefix + "_" + hex.EncodeToString(buf)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	return u.String(), drop, nil
}

// startServer writes the configuration with equivalent settings for either
// server (EC P-256 CA and JWT keys, 24h CA, 1h X509-SVIDs, 5m JWT-SVIDs,
// join_token attestation, warn logging; spire-server's per-IP rate limits
// off because every simulated agent shares 127.0.0.1) and starts it.
func startServer(ctx context.Context, spec serverSpec) (*server, error) {
	dir, err := os.MkdirTemp("", "cmp")
	if err != nil {
		return nil, err
	}
	adminSock := filepath.Join(dir, "api.sock")
	cleanup := []func(){func() { os.RemoveAll(dir) }}
	fail := func(err error) (*server, error) {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		return nil, err
	}
	port, err := benchproc.FreePort()
	if err != nil {
		return fail(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dsn := ""
	if spec.backend == "postgres" {
		var drop func()
		dsn, drop, err = createDatabase(ctx, spec.pgBase, "cmp_"+spec.kind)
		if err != nil {
			return fail(err)
		}
		cleanup = append(cleanup, drop)
	}
	var bin string
	var args []string
	switch spec.kind {
	case "arbor":
		ds := `datastore "sqlite" {}`
		if dsn != "" {
			ds = fmt.Sprintf("datastore \"postgres\" {\n    dsn = %q\n  }", dsn)
		}
		conf := fmt.Sprintf(`trust_domain = "example.org"

defaults {
  x509_svid_ttl = "1h"
  jwt_svid_ttl  = "5m"
  key_type      = "ec-p256"
  jwt_key_type  = "ec-p256"
}

server "bench" {
  listen        = %q
  state_dir     = %q
  admin_socket  = %q
  health_listen = "off"
  log_level     = "warn"
  ca_ttl        = "24h"
  %s
  node_attestor "join_token" {
    default_ttl = "1h"
  }
}
`, addr, filepath.Join(dir, "state"), adminSock, ds)
		path := filepath.Join(dir, "topology.hcl")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return fail(err)
		}
		bin, args = spec.arborBin, []string{"server", "--topology", path, "--node", "bench"}
	case "spire":
		dbType, conn := "sqlite3", filepath.Join(dir, "datastore.sqlite3")
		if dsn != "" {
			dbType, conn = "postgres", dsn
		}
		conf := fmt.Sprintf(`server {
  bind_address          = "127.0.0.1"
  bind_port             = "%d"
  socket_path           = %q
  trust_domain          = "example.org"
  data_dir              = %q
  log_level             = "WARN"
  ca_ttl                = "24h"
  ca_key_type           = "ec-p256"
  jwt_key_type          = "ec-p256"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl  = "5m"

  ratelimit {
    attestation = false
    signing     = false
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = %q
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`, port, adminSock, filepath.Join(dir, "data"), dbType, conn)
		path := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return fail(err)
		}
		bin, args = filepath.Join(spec.spireBin, "spire-server"), []string{"run", "-config", path}
	default:
		return fail(fmt.Errorf("unknown server kind %q", spec.kind))
	}
	p, err := benchproc.Start(ctx, bin, args, []string{gcTraceEnv}, filepath.Join(spec.logDir, spec.name+".log"), adminSock, addr, 90*time.Second, cleanup...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.kind, err)
	}
	return &server{kind: spec.kind, Process: p}, nil
}
