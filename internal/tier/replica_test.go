package tier

import (
	"errors"
	"strings"
	"testing"

	"github.com/arborid/arbor/topology"
)

const replicaSrc = `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "127.0.0.1:9081"
  replicas      = 3
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
server "region" {
  parent        = "root"
  listen        = "127.0.0.1:8091"
  health_listen = "off"
  ca_ttl        = "12h"
  replicas      = 2
  datastore "postgres" { dsn = "postgres://db/region" }
}
server "lite" {
  parent        = "root"
  listen        = "127.0.0.1:8071"
  health_listen = "off"
  ca_ttl        = "12h"
  replicas      = 2
}
`

func parseReplicaSrc(t *testing.T) *topology.File {
	t.Helper()
	f, diags := topology.Parse([]byte(replicaSrc), "/etc/arbor/ha.hcl")
	if diags.HasErrors() {
		t.Fatalf("Parse: %s", topology.FormatDiagnostics(diags, nil))
	}
	return f
}

// `arbor server --node root/K` runs replica K: its own listen and health
// ports, admin socket and state directory, the block's datastore; NAME and
// NAME/1 are the block as it always ran.
func TestServerConfigOfAReplica(t *testing.T) {
	f := parseReplicaSrc(t)
	one, err := ServerConfig(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	same, err := ServerConfig(f, "root/1")
	if err != nil {
		t.Fatal(err)
	}
	two, err := ServerConfig(f, "root/2")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"root name", one.Config.Name, "root"},
		{"root listen", one.Config.ListenAddr, "127.0.0.1:8081"},
		{"root state dir", one.Config.StateDir, "/etc/arbor/.arbor/ha/root"},
		{"root admin socket", one.Config.AdminSocket, "/etc/arbor/.arbor/ha/root/admin.sock"},
		{"root/1 state dir", same.Config.StateDir, one.Config.StateDir},
		{"root/1 listen", same.Config.ListenAddr, one.Config.ListenAddr},
		{"root/2 name", two.Config.Name, "root/2"},
		{"root/2 listen", two.Config.ListenAddr, "127.0.0.1:8082"},
		{"root/2 health", two.Config.HealthAddr, "127.0.0.1:9082"},
		{"root/2 state dir", two.Config.StateDir, "/etc/arbor/.arbor/ha/root/replica-2"},
		{"root/2 admin socket", two.Config.AdminSocket, "/etc/arbor/.arbor/ha/root/replica-2/admin.sock"},
		{"root/2 datastore", two.Config.Datastore, "postgres"},
		{"root/2 dsn", two.Config.PostgresDSN, "postgres://db/arbor"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if two.Config.CATTL != one.Config.CATTL || two.Config.TrustDomain != one.Config.TrustDomain {
		t.Errorf("root/2 CA TTL %v, trust domain %v; want root's %v, %v", two.Config.CATTL, two.Config.TrustDomain, one.Config.CATTL, one.Config.TrustDomain)
	}

	// A downstream replica's CA comes through its own co-located agent.
	g2, err := ServerConfig(f, "region/2")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := g2.Upstream.Parent.WorkloadAPIAddr, "unix:///etc/arbor/.arbor/ha/region/replica-2/agent.sock"; got != want {
		t.Errorf("region/2 parent Workload API = %q, want %q", got, want)
	}
	ag, err := AgentConfig(f, "region/2")
	if err != nil {
		t.Fatal(err)
	}
	if ag.SocketPath != "/etc/arbor/.arbor/ha/region/replica-2/agent.sock" || ag.DataDir != "/etc/arbor/.arbor/ha/region/replica-2/agent" {
		t.Errorf("AgentConfig(region/2): socket %q, data dir %q; want them under region/replica-2", ag.SocketPath, ag.DataDir)
	}
}

// A replica that names none of the block, or a replica K ≥ 2 of a block
// on SQLite, is refused with one line.
func TestServerConfigRefusesReplicas(t *testing.T) {
	f := parseReplicaSrc(t)
	for _, c := range []struct{ node, want string }{
		{"root/4", `server "root" has 3 replicas, named root (replica 1) to root/3`},
		{"root/0", `server "root" has 3 replicas`},
		{"root/x", `server "root" has 3 replicas`},
		{"lite/2", `replica lite/2 needs a PostgreSQL datastore shared by every replica, but the block's datastore is sqlite`},
	} {
		_, err := ServerConfig(f, c.node)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ServerConfig(%q) = %v, want one line containing %q", c.node, err, c.want)
		}
	}
	if _, err := ServerConfig(f, "root/9"); !errors.Is(err, topology.ErrUnknownReplica) {
		t.Errorf("ServerConfig(root/9) = %v, want topology.ErrUnknownReplica", err)
	}
	if _, err := ServerConfig(f, "lite"); err != nil {
		t.Errorf("ServerConfig(lite) = %v; replica 1 on SQLite runs as before", err)
	}
}
