package delivery

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/arborid/arbor/internal/testkit"
)

// pgBin is where Debian's PostgreSQL 15 keeps initdb, postgres and pg_ctl.
const pgBin = "/usr/lib/postgresql/15/bin"

// pgUser is who runs the test's PostgreSQL: PostgreSQL refuses to run as
// root, so under uid 0 (CI) it runs as the postgres user, and the files
// arbor svid watch writes for it are owned by that user.
type pgUser struct {
	name     string // "" when the test's own user runs it
	uid, gid int
}

func postgresUser(t *testing.T) pgUser {
	t.Helper()
	if os.Getuid() != 0 {
		return pgUser{uid: os.Getuid(), gid: os.Getgid()}
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root, PostgreSQL needs the postgres user (apt-get install postgresql creates it): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return pgUser{name: "postgres", uid: uid, gid: gid}
}

// command runs a PostgreSQL program as the user.
func (u pgUser) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(pgBin, name), args...)
	if u.name != "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// shell is how a shell command (the reload command) runs as the user.
func (u pgUser) shell(cmd string) string {
	if u.name == "" {
		return cmd
	}
	return "runuser -u " + u.name + " -- " + cmd
}

// A real PostgreSQL 15, run by the test in its own directory on a free port,
// serves TLS with the server certificate, key and CA file kept by
// `arbor svid watch --config` (files owned by the postgres user, reloaded
// with pg_ctl reload) and authenticates a pgx client by its X509-SVID
// (hostssl ... cert: the certificate's CN, the entry's first DNS name,
// mapped to a role through pg_ident with a regular expression); psql with
// the client files kept by the same watch logs in too. After the server's
// SVID rotates, new connections get the new certificate and still log in.
func TestPostgresCertAuthAcrossRotation(t *testing.T) {
	for _, p := range []string{"initdb", "postgres", "pg_ctl", "psql"} {
		if _, err := os.Stat(filepath.Join(pgBin, p)); err != nil {
			t.Fatalf("PostgreSQL 15 is not installed (%v): apt-get install postgresql-15 (test/run installs it)", err)
		}
	}
	pu := postgresUser(t)
	tr := startTree(t)
	pgID, appID := spiffeid.RequireFromPath(td, "/postgres"), spiffeid.RequireFromPath(td, "/app")
	tr.entry(pgID, 8)
	tr.entry(appID, 0, "app.db.example.org")

	// Under /tmp with short names: the socket directory's path is limited.
	base, err := os.MkdirTemp("", "arbor-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	data, sock, certs, client := filepath.Join(base, "data"), filepath.Join(base, "sock"), filepath.Join(base, "certs"), filepath.Join(base, "client")
	for _, d := range []string{data, sock, certs, client} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{data, sock, certs} {
		if err := os.Chown(d, pu.uid, pu.gid); err != nil {
			t.Fatal(err)
		}
	}

	ctx := testkit.Context(t, 3*time.Minute)
	if out, err := pu.command(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "--no-instructions").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}

	owner := ""
	if pu.name != "" {
		owner = `owner = "` + pu.name + `"`
	}
	watchConf := fmt.Sprintf(`
svid "postgres" {
  spiffe_id      = %q
  cert_file      = "certs/server.crt"
  key_file       = "certs/server.key"
  bundle_file    = "certs/ca.crt"
  %s
  reload_command = %q
}

svid "app" {
  spiffe_id   = %q
  cert_file   = "client/app.crt"
  key_file    = "client/app.key"
  bundle_file = "client/ca.crt"
}
`, pgID, owner, pu.shell(filepath.Join(pgBin, "pg_ctl")+" reload -s -D "+data), appID)
	confPath := filepath.Join(base, "watch.hcl")
	if err := os.WriteFile(confPath, []byte(watchConf), 0o644); err != nil {
		t.Fatal(err)
	}
	w := tr.runWatch("--config", confPath)
	waitFiles(t, 30*time.Second, filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"),
		filepath.Join(certs, "ca.crt"), filepath.Join(client, "app.key"))
	if fi, err := os.Stat(filepath.Join(certs, "server.key")); err != nil {
		t.Fatal(err)
	} else if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != pu.uid || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server.key is owned by %d with mode %v, want %d and 0600 (PostgreSQL refuses anything else)", st.Uid, fi.Mode().Perm(), pu.uid)
	}

	port := freePort(t)
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
ssl = on
ssl_cert_file = '%s/server.crt'
ssl_key_file = '%s/server.key'
ssl_ca_file = '%s/ca.crt'
fsync = off
log_connections = on
`, port, sock, certs, certs, certs)
	appendFile(t, filepath.Join(data, "postgresql.conf"), conf)
	// Replace pg_hba.conf: local trust for the test's own setup, and TLS
	// with client certificates only; the spiffe map takes the role from the
	// certificate's CN, <role>.db.example.org.
	writeAs(t, filepath.Join(data, "pg_hba.conf"), pu, `local   all  postgres                 trust
hostssl all  all       127.0.0.1/32  cert clientcert=verify-full map=spiffe
`)
	writeAs(t, filepath.Join(data, "pg_ident.conf"), pu, `spiffe  /^([a-z0-9_]+)\.db\.example\.org$  \1
`)

	pg := pu.command(context.Background(), "postgres", "-D", data)
	var pgOut lockedBuffer
	pg.Stdout, pg.Stderr = &pgOut, &pgOut
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	pgDone := make(chan error, 1)
	go func() { pgDone <- pg.Wait() }()
	t.Cleanup(func() {
		pg.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-pgDone:
		case <-time.After(30 * time.Second):
			pg.Process.Kill()
			t.Error("postgres did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("postgres log:\n%s", pgOut.String())
		}
	})

	var admin *pgx.Conn
	testkit.Poll(t, 60*time.Second, "PostgreSQL accepts connections on its socket", func() error {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", sock, port))
		if err != nil {
			return err
		}
		admin = c
		return nil
	})
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE ROLE app LOGIN"); err != nil {
		t.Fatal(err)
	}

	// pgx with the app's X509-SVID from the Workload API, verifying that
	// the server is pgID (go-spiffe checks chain and ID).
	src := tr.source(appID)
	connect := func() (serial string, err error) {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=postgres sslmode=require connect_timeout=10", port))
		if err != nil {
			return "", err
		}
		cfg.TLSConfig = tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(pgID))
		cfg.Fallbacks = nil
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return "", err
		}
		defer c.Close(context.Background())
		var who, dn string
		if err := c.QueryRow(ctx, "SELECT current_user, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&who, &dn); err != nil {
			return "", err
		}
		if who != "app" || !strings.Contains(dn, "CN=app.db.example.org") {
			return "", fmt.Errorf("logged in as %q with client DN %q, want app and CN=app.db.example.org", who, dn)
		}
		tc, ok := c.PgConn().Conn().(*tls.Conn)
		if !ok {
			return "", fmt.Errorf("the connection is %T, not TLS", c.PgConn().Conn())
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	first, err := connect()
	if err != nil {
		t.Fatalf("pgx with the app's X509-SVID: %v", err)
	}
	w.waitReady(t, 60*time.Second)

	// Without a client certificate PostgreSQL refuses the login.
	noCert, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=postgres sslmode=require connect_timeout=10", port))
	if err != nil {
		t.Fatal(err)
	}
	noCert.TLSConfig = tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(pgID))
	noCert.Fallbacks = nil
	if c, err := pgx.ConnectConfig(ctx, noCert); err == nil {
		c.Close(context.Background())
		t.Error("PostgreSQL let app log in without a client certificate")
	}

	// psql reads the client files the same watch keeps.
	psql := exec.CommandContext(ctx, filepath.Join(pgBin, "psql"), "-XAtc", "SELECT current_user",
		fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=postgres sslmode=verify-ca sslrootcert=%s sslcert=%s sslkey=%s",
			port, filepath.Join(client, "ca.crt"), filepath.Join(client, "app.crt"), filepath.Join(client, "app.key")))
	if out, err := psql.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "app" {
		t.Errorf("psql with the watched client files: %v: %s", err, out)
	}

	// Across the server's rotations, every new connection logs in, and
	// PostgreSQL serves the new certificate after each reload.
	seen := map[string]bool{first: true}
	connects, failures := 1, 0
	testkit.Poll(t, 90*time.Second, "PostgreSQL serving two rotated certificates", func() error {
		s, err := connect()
		connects++
		if err != nil {
			failures++
			t.Errorf("connection %d failed: %v", connects, err)
			return nil
		}
		seen[s] = true
		if len(seen) < 3 {
			return fmt.Errorf("%d server certificates so far", len(seen))
		}
		return nil
	})
	t.Logf("%d connections, %d failed, %d server certificates, %d reloads by arbor svid watch",
		connects, failures, len(seen), w.logs.count("reloaded"))
	w.waitReady(t, 30*time.Second)
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeAs replaces path with s, owned by the PostgreSQL user.
func writeAs(t *testing.T, path string, u pgUser, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
}
