package topology

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const replicasSrc = `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "127.0.0.1:9081"
  replicas      = 3
  datastore "postgres" { dsn = "postgres://db/arbor" }
  bundle_endpoint {
    listen  = "127.0.0.1:8443"
    profile = "https_spiffe"
  }
}
server "region" {
  parent        = "root"
  listen        = "127.0.0.1:8091"
  health_listen = "off"
  admin_socket  = "/run/arbor/region.sock"
  replicas      = 2
  ca_ttl        = "12h"
  datastore "postgres" { dsn = "postgres://db/region" }
}
`

// parseReplicas parses replicasSrc, which must hold no error (its join
// token agent is warned about).
func parseReplicas(t *testing.T) *File {
	t.Helper()
	f, diags := Parse([]byte(replicasSrc), testPath)
	if diags.HasErrors() {
		t.Fatalf("Parse() diagnostics:\n%s", FormatDiagnostics(diags, nil))
	}
	return f
}

// Replica 1 is the block as parsed; replica K has every port plus K-1 and
// its state, sockets and agent files under <state_dir>/replica-K (or
// beside a path set outside the state directory).
func TestReplicaDerivesPortsAndPaths(t *testing.T) {
	f := parseReplicas(t)
	root, region := f.Servers[0], f.Servers[1]
	for _, node := range []string{"root", "root/1"} {
		got, err := f.Replica(node)
		if err != nil || got != root {
			t.Fatalf("Replica(%q) = %p, %v, want the block itself (%p)", node, got, err, root)
		}
	}
	r3, err := f.Replica("root/3")
	if err != nil {
		t.Fatal(err)
	}
	g2, err := f.Replica("region/2")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"root/3 node", r3.Node(), "root/3"},
		{"root/3 listen", r3.Listen, "127.0.0.1:8083"},
		{"root/3 address", r3.Address, "127.0.0.1:8081"},
		{"root/3 addresses", strings.Join(r3.Addresses, ","), "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083"},
		{"region/2 addresses", strings.Join(g2.Addresses, ","), "127.0.0.1:8091,127.0.0.1:8092"},
		{"root/3 health_listen", r3.HealthListen, "127.0.0.1:9083"},
		{"root/3 bundle_endpoint", r3.BundleEndpoint.Listen, "127.0.0.1:8445"},
		{"root/3 state_dir", r3.StateDir, "/etc/arbor/.arbor/topology/root/replica-3"},
		{"root/3 admin_socket", r3.AdminSocket, "/etc/arbor/.arbor/topology/root/replica-3/admin.sock"},
		{"root/3 dsn", r3.Datastore.DSN, "postgres://db/arbor"},
		{"region/2 listen", g2.Listen, "127.0.0.1:8092"},
		{"region/2 health_listen", g2.HealthListen, ""},
		{"region/2 admin_socket", g2.AdminSocket, "/run/arbor/region-2.sock"},
		{"region/2 state_dir", g2.StateDir, "/etc/arbor/.arbor/topology/region/replica-2"},
		{"region/2 agent socket", g2.Agent.SocketPath, "/etc/arbor/.arbor/topology/region/replica-2/agent.sock"},
		{"region/2 agent data_dir", g2.Agent.DataDir, "/etc/arbor/.arbor/topology/region/replica-2/agent"},
		// Replica 1 is unchanged by deriving the others.
		{"root listen", root.Listen, "127.0.0.1:8081"},
		{"root bundle_endpoint", root.BundleEndpoint.Listen, "127.0.0.1:8443"},
		{"region agent socket", region.Agent.SocketPath, "/etc/arbor/.arbor/topology/region/agent.sock"},
		{"region state_dir", region.StateDir, "/etc/arbor/.arbor/topology/region"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if r3.ReplicaNumber != 3 || r3.Name != "root" || r3.SPIFFEID != root.SPIFFEID {
		t.Errorf("root/3: ReplicaNumber %d, Name %q, SPIFFE ID %v; want 3, root, %v", r3.ReplicaNumber, r3.Name, r3.SPIFFEID, root.SPIFFEID)
	}
	if n := len(root.ReplicaList()); n != 3 {
		t.Errorf("root.ReplicaList() has %d servers, want 3", n)
	}
}

// A node naming no replica of a block is refused with one line that says
// which names run it.
func TestReplicaRefusesUnknownReplicas(t *testing.T) {
	f := parseReplicas(t)
	for _, c := range []struct {
		node, want string
		is         error
	}{
		{"root/4", `server "root" has 3 replicas, named root (replica 1) to root/3`, ErrUnknownReplica},
		{"root/0", `server "root" has 3 replicas`, ErrUnknownReplica},
		{"root/-1", `server "root" has 3 replicas`, ErrUnknownReplica},
		{"root/two", `server "root" has 3 replicas`, ErrUnknownReplica},
		{"root/", `server "root" has 3 replicas`, ErrUnknownReplica},
		{"root/2/1", `server "root" has 3 replicas`, ErrUnknownReplica},
		{"nope/2", `unknown server "nope"`, ErrUnknownServer},
		{"/2", `write NAME or NAME/K`, ErrUnknownReplica},
	} {
		s, err := f.Replica(c.node)
		if err == nil || !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Replica(%q) = %v, %v; want one line wrapping %v containing %q", c.node, s, err, c.is, c.want)
		}
	}
	one := mustParse(t, `trust_domain = "example.org"
server "solo" {}
`, testPath)
	if _, err := one.Replica("solo/2"); err == nil || !strings.Contains(err.Error(), `runs one process (replicas = 1)`) {
		t.Errorf(`Replica("solo/2") = %v, want "runs one process (replicas = 1)"`, err)
	}
}

// Validation compares the replicas' derived ports and paths with every
// other server's and replica's of the host, at the replicas attribute.
func TestValidateReplicaCollisions(t *testing.T) {
	for _, c := range []struct {
		name, src string
		want      []string // line:col summary / detail fragment
	}{{
		name: "health port of replica 2 is replica 1's listen port (the defaults)",
		src: `trust_domain = "example.org"
server "root" {
  replicas = 2
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
`,
		want: []string{`3:14 Duplicate listen port / health_listen = "127.0.0.1:8081" of server "root/2" (replica 2 of "root", derived from its replicas) and listen = "127.0.0.1:8081" of server "root"`},
	}, {
		name: "replica 3's listen port is another block's",
		src: `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  replicas      = 3
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
server "region" {
  parent        = "root"
  listen        = "127.0.0.1:8083"
  health_listen = "off"
}
`,
		want: []string{`10:19 Duplicate listen port / listen = "127.0.0.1:8083" of server "region" and listen = "127.0.0.1:8083" of server "root/3"`},
	}, {
		name: "replica 2's admin socket is another block's",
		src: `trust_domain = "example.org"
server "root" {
  health_listen = "off"
  admin_socket  = "/run/arbor/root.sock"
  replicas      = 2
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
server "other" {
  parent        = "root"
  listen        = "127.0.0.1:9000"
  health_listen = "off"
  admin_socket  = "/run/arbor/root-2.sock"
}
`,
		want: []string{`12:19 Duplicate path on one host / The admin socket of server "other" is /run/arbor/root-2.sock, which is also the admin socket of server "root/2"`},
	}, {
		name: "a derived port beyond 65535",
		src: `trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:65535"
  health_listen = "off"
  replicas      = 2
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
`,
		want: []string{`5:19 Replica port out of range / Replica 2 of server "root" would listen on 127.0.0.1:65536`},
	}, {
		name: "a derived admin socket too long",
		src: `trust_domain = "example.org"
server "root" {
  health_listen = "off"
  admin_socket  = "/run/` + strings.Repeat("a", 92) + `.sock"
  replicas      = 2
  datastore "postgres" { dsn = "postgres://db/arbor" }
}
`,
		want: []string{`5:19 Replica socket path too long / The admin socket of replica root/2`},
	}} {
		t.Run(c.name, func(t *testing.T) {
			_, diags := Parse([]byte(c.src), testPath)
			for _, w := range c.want {
				pos, frag, _ := strings.Cut(w, " / ")
				if !hasDiag(diags, pos, frag) {
					t.Errorf("Parse() did not report %q; it reported:\n%s", w, FormatDiagnostics(diags, nil))
				}
			}
		})
	}
	// Ports spaced apart by at least the replicas pass.
	_, diags := Parse([]byte(replicasSrc), testPath)
	if diags.HasErrors() {
		t.Errorf("Parse(replicasSrc) = %s, want no errors", FormatDiagnostics(diags, nil))
	}
}

// hasDiag reports whether diags hold an error at "line:col summary" whose
// detail contains frag.
func hasDiag(diags hcl.Diagnostics, pos, frag string) bool {
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil &&
			fmt.Sprintf("%d:%d %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary) == pos && strings.Contains(d.Detail, frag) {
			return true
		}
	}
	return false
}

// Render and render --format spire take a replica's node name and write
// the replica's own ports and paths.
func TestRenderReplica(t *testing.T) {
	f := parseReplicas(t)
	cfg, err := Render(f, "root/2")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := cfg.WriteHCL(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"root/2" rendered`, `replica = 2`, `listen = "127.0.0.1:8082"`, `state_dir = "/etc/arbor/.arbor/topology/root/replica-2"`} {
		if !strings.Contains(strings.Join(strings.Fields(b.String()), " "), want) {
			t.Errorf("Render(root/2) lacks %q:\n%s", want, b.String())
		}
	}
	sc, err := RenderSPIRE(f, "root/2")
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := sc.WriteServerConf(&sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`bind_port = 8082`, `socket_path = "/etc/arbor/.arbor/topology/root/replica-2/admin.sock"`} {
		if !strings.Contains(strings.Join(strings.Fields(sb.String()), " "), want) {
			t.Errorf("RenderSPIRE(root/2) lacks %q:\n%s", want, sb.String())
		}
	}
	if _, err := Render(f, "root/9"); !errors.Is(err, ErrUnknownReplica) {
		t.Errorf("Render(root/9) = %v, want ErrUnknownReplica", err)
	}
}
