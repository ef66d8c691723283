package peragent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/internal/testkit"
)

// spireServerEnv sets the entries of TestSpireServerSideBySide (CI:
// defaultSpireServerEntries, a check that the comparison runs; the figure
// in docs/perf/peragent.md uses 20000).
const spireServerEnv = "ARBOR_PERAGENT_SPIRE_ENTRIES"

const defaultSpireServerEntries = 2000

// TestSpireServerSideBySide is TestOneAgentManyEntries' spire-agent run
// against a real spire-server of the same release instead of arbor, with
// the same entries seeded through the same admin API: spire-agent must
// reach the same full cache. The time is logged beside arbor's.
func TestSpireServerSideBySide(t *testing.T) {
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	n := defaultSpireServerEntries
	if v := os.Getenv(spireServerEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10 {
			t.Fatalf("%s=%q: want a number of entries, at least 10", spireServerEnv, v)
		}
	}
	testkit.Context(t, 5*time.Minute+time.Duration(n)*20*time.Millisecond)
	admin, addr := startSpireServer(t)
	alias := spiffeid.RequireFromPath(td, "/peragent/node")
	took := seed(t, admin, alias, n, selfShape(t))
	t.Logf("spire-server %s: seeded %d entries in %v (%.0f entries/s)", spireVersion, n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	bundle, bundlePEM := serverBundle(t, admin)
	r := runSpireAgent(t, addr, bundlePEM, joinToken(t, admin, alias), n+1, 2*time.Minute+time.Duration(n)*10*time.Millisecond)
	checkWorkload(t, "spire-agent on spire-server", r.socket, n, bundle)
	t.Logf("spire-agent %s against spire-server %s: %s", spireVersion, spireVersion, r)
}

// startSpireServer runs a spire-server of spireVersion (join_token, SQLite
// and memory keys) and returns, once it serves its bundle, a connection to
// its admin socket and its agent address.
func startSpireServer(t *testing.T) (*grpc.ClientConn, string) {
	t.Helper()
	dir := testkit.ShortDir(t)
	addr := freeAddr(t)
	port, err := strconv.Atoi(addr[len("127.0.0.1:"):])
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "api.sock")
	conf := fmt.Sprintf(`server {
  bind_address          = "127.0.0.1"
  bind_port             = "%d"
  socket_path           = %q
  trust_domain          = %q
  data_dir              = %q
  log_level             = "INFO"
  ca_ttl                = "24h"
  default_x509_svid_ttl = "1h"
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, port, socket, td.Name(), filepath.Join(dir, "data"), filepath.Join(dir, "datastore.sqlite3"))
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "spire-server "+spireVersion, filepath.Join(dir, "spire-server.log"), filepath.Join(spireBin, "spire-server"), "run", "-config", confPath)
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	testkit.Poll(t, 60*time.Second, "spire-server serving its bundle", func() error {
		if p.exited() {
			t.Fatalf("spire-server exited: %v", p.err)
		}
		b, err := bundlev1.NewBundleClient(conn).GetBundle(testkit.Context(t, 5*time.Second), &bundlev1.GetBundleRequest{})
		if err != nil {
			return err
		}
		if len(b.X509Authorities) == 0 {
			return fmt.Errorf("no X.509 authority yet")
		}
		return nil
	})
	return conn, addr
}
