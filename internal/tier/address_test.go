package tier

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/topology"
)

// The address list of a tier reaches every process that dials it: the
// co-located agent of a child (ServerAddresses), the child's parent link
// (ParentAddresses), and a workload agent attached to the tier.
func TestAddressListReachesEveryDialer(t *testing.T) {
	for _, c := range []struct {
		name, rootAttrs string
		want            []string
	}{
		{"a list", `address = ["10.0.0.1:8081", "10.0.0.2:8081", "10.0.0.3:8081"]`, []string{"10.0.0.1:8081", "10.0.0.2:8081", "10.0.0.3:8081"}},
		{"one load balancer", `address = "lb.example.org:8081"`, []string{"lb.example.org:8081"}},
		{"replicas without an address", "listen = \"127.0.0.1:8081\"\nhealth_listen = \"off\"\nreplicas = 3\ndatastore \"postgres\" { dsn = \"postgres://db/arbor\" }",
			[]string{"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := `trust_domain = "example.org"
server "root" {
` + c.rootAttrs + `
}
server "region" {
  parent        = "root"
  listen        = "127.0.0.1:8091"
  health_listen = "off"
  ca_ttl        = "12h"
}
`
			f, diags := topology.Parse([]byte(src), "/etc/arbor/addr.hcl")
			if diags.HasErrors() {
				t.Fatalf("Parse: %s", topology.FormatDiagnostics(diags, nil))
			}
			ag, err := AgentConfig(f, "region")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ag.ServerAddresses, c.want) || ag.ServerAddress != "" {
				t.Errorf("AgentConfig(region): ServerAddresses %q, ServerAddress %q; want %q and none", ag.ServerAddresses, ag.ServerAddress, c.want)
			}
			srv, err := ServerConfig(f, "region")
			if err != nil {
				t.Fatal(err)
			}
			if p := srv.Upstream.Parent; p == nil || !slices.Equal(p.ParentAddresses, c.want) || p.ParentAddress != "" {
				t.Errorf("ServerConfig(region).Upstream.Parent = %+v, want ParentAddresses %q", p, c.want)
			}
			wl, err := WorkloadAgentConfig(f, "root")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(wl.ServerAddresses, c.want) {
				t.Errorf("WorkloadAgentConfig(root).ServerAddresses = %q, want %q", wl.ServerAddresses, c.want)
			}
			// The lists are copies: a caller changing its configuration
			// does not change the parsed file.
			wl.ServerAddresses[0] = "changed:1"
			if f.Servers[0].Addresses[0] == "changed:1" {
				t.Error("WorkloadAgentConfig shares its ServerAddresses with the topology")
			}
		})
	}
}

// An agent configured from a topology whose address lists a dead server
// first attests through the next one: the list is used as a list.
func TestWorkloadAgentUsesTheAddressList(t *testing.T) {
	dir := testkit.ShortDir(t)
	dead, live := closedPort(t), closedPort(t)
	src := fmt.Sprintf(`trust_domain = "example.org"
server "root" {
  listen        = %q
  address       = [%q, %q]
  health_listen = "off"
  state_dir     = %q
  node_attestor "join_token" {}
}
`, live, dead, live, filepath.Join(dir, "root"))
	f, diags := topology.Parse([]byte(src), filepath.Join(dir, "t.hcl"))
	if diags.HasErrors() {
		t.Fatalf("Parse: %s", topology.FormatDiagnostics(diags, nil))
	}
	ctx := testkit.Context(t, 2*time.Minute)
	tr, err := ServerConfig(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	cfg, closer, err := tr.Open(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	root := testkit.StartServer(t, cfg)
	tok, err := agentv1.NewAgentClient(root.Admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		t.Fatal(err)
	}
	acfg, err := WorkloadAgentConfig(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	acfg.JoinToken = tok.Value
	acfg.TrustBundle = root.Bundles().X509Bundle().X509Authorities()
	acfg.DataDir = filepath.Join(dir, "ag")
	acfg.SocketPath = filepath.Join(dir, "ag.sock")
	acfg.SyncInterval = time.Second
	ag, err := runAgent(t, acfg)
	if err != nil {
		t.Fatalf("agent stopped before attesting: %v", err)
	}
	if got := ag.Server(); got != live {
		t.Errorf("agent.Server() = %q, want the live %s (the list was %q)", got, live, acfg.ServerAddresses)
	}
}

// closedPort is a loopback address nothing listens on (it was free a
// moment ago).
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
