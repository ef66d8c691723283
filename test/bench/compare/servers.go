package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// server is a running arbor or spire-server process.
type server struct {
	kind      string
	cmd       *exec.Cmd
	adminSock string
	addr      string
	log       string
	done      chan struct{}
	waitErr   error
	cleanup   []func()
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
	s := &server{kind: spec.kind, adminSock: filepath.Join(dir, "api.sock"), log: filepath.Join(spec.logDir, spec.name+".log"),
		done: make(chan struct{})}
	s.cleanup = append(s.cleanup, func() { os.RemoveAll(dir) })
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dsn := ""
	if spec.backend == "postgres" {
		var drop func()
		dsn, drop, err = createDatabase(ctx, spec.pgBase, "cmp_"+spec.kind)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.cleanup = append(s.cleanup, drop)
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
`, s.addr, filepath.Join(dir, "state"), s.adminSock, ds)
		path := filepath.Join(dir, "topology.hcl")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			s.stop()
			return nil, err
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
`, port, s.adminSock, filepath.Join(dir, "data"), dbType, conn)
		path := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			s.stop()
			return nil, err
		}
		bin, args = filepath.Join(spec.spireBin, "spire-server"), []string{"run", "-config", path}
	default:
		s.stop()
		return nil, fmt.Errorf("unknown server kind %q", spec.kind)
	}
	logFile, err := os.Create(s.log)
	if err != nil {
		s.stop()
		return nil, err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		s.stop()
		return nil, fmt.Errorf("starting %s: %w", spec.kind, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	if err := s.waitReady(ctx, 90*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s did not become ready: %w (log: %s)", spec.kind, err, s.log)
	}
	return s, nil
}

// waitReady polls until the admin socket serves a bundle with an X.509
// authority and the agent port accepts connections.
func (s *server) waitReady(ctx context.Context, timeout time.Duration) error {
	conn, err := grpc.NewClient("unix://"+s.adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := bundlev1.NewBundleClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited: %v", s.waitErr)
		default:
		}
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			b, err := client.GetBundle(cctx, &bundlev1.GetBundleRequest{})
			if err != nil {
				return err
			}
			if len(b.X509Authorities) == 0 {
				return errors.New("bundle has no X.509 authority yet")
			}
			c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after 20s, and removes what it created.
func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	s.cleanup = nil
}

// buildArbor builds cmd/arbor from the repository into dir.
func buildArbor(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "arbor")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/arbor")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/arbor: %v\n%s", err, out)
	}
	return bin, nil
}

// buildSpire runs test/spirepeer/build.sh, which prints the directory of the
// SPIRE v1.13.3 binaries (built once and cached).
func buildSpire(ctx context.Context, repo string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", "test/spirepeer/build.sh")
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("test/spirepeer/build.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// repoRoot walks up from the working directory to the directory of go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the arbor repository (no go.mod above the working directory)")
		}
		dir = parent
	}
}
