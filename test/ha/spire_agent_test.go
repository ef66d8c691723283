package ha

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/testkit"
)

// TestSpireAgentBehindReplicas runs a real spire-agent v1.13.3 against
// three arbor replicas through one address (a TCP proxy in front of them,
// as a load balancer would be) and kills the replicas in turn, each down
// a few seconds, while a workload with a 20s SVID fetches from the agent:
// no fetch fails, every SVID verifies, the SVID is renewed during the
// loop, and the agent never attests again.
func TestSpireAgentBehindReplicas(t *testing.T) {
	bin := spireAgentBin(t)
	testkit.Context(t, 6*time.Minute)
	tr := newTier(t, 3, testkit.PostgresDSN(t), "")
	tr.startAll()
	var backends []string
	for _, r := range tr.replicas {
		backends = append(backends, r.addr())
	}
	px := startProxy(t, backends)

	token := tr.joinToken(1)
	workload := spiffeid.RequireFromPath(td, "/workload/spire-agent")
	tr.createEntries(2, agentID(token), 20*time.Second, workload)

	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, tr.bundlePEM(1), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(testkit.ShortDir(t), "agent.sock")
	conf := fmt.Sprintf(`agent {
  data_dir          = %q
  log_level         = "DEBUG"
  server_address    = "127.0.0.1"
  server_port       = "%d"
  socket_path       = %q
  trust_bundle_path = %q
  trust_domain      = %q
  join_token        = %q
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "data"), px.port(), socket, bundlePath, trustDomain, token)
	confPath := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := startProcess(t, "spire-agent v1.13.3", filepath.Join(dir, "spire-agent.log"), bin, "run", "-config", confPath)
	testkit.Poll(t, 90*time.Second, "spire-agent serving the Workload API", func() error {
		if ag.exited() {
			t.Fatalf("spire-agent exited: %v\n%s", ag.err, tail(ag.log, 40))
		}
		c, err := net.DialTimeout("unix", socket, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	spireWorkload := &arborAgent{name: "spire-agent", socket: socket, workloads: []spiffeid.ID{workload}, proc: ag}
	spireWorkload.waitWorkloads(t)

	watch := watchWorkloads(map[string][]spiffeid.ID{socket: {workload}}, 200*time.Millisecond)
	kills := 0
	start := time.Now()
	for i := 0; time.Since(start) < 45*time.Second; i++ {
		k := i%len(tr.replicas) + 1
		tr.kill(k)
		kills++
		time.Sleep(downFor)
		tr.start(k)
		time.Sleep(2 * time.Second)
	}
	fetches, failures := watch.finish()
	t.Logf("spire-agent behind a proxy: %d kills in %.0fs, %d proxied connections, %d Workload API fetches, %d failures, %d distinct X509-SVIDs",
		kills, time.Since(start).Seconds(), px.conns.Load(), fetches, len(failures), watch.distinctSVIDs(workload))
	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}
	if fetches < 100 {
		t.Errorf("only %d Workload API fetches", fetches)
	}
	// 20s SVIDs renew at half-life: 45s sees several.
	if n := watch.distinctSVIDs(workload); n < 3 {
		t.Errorf("%d distinct X509-SVIDs for %s in 45s of 20s SVIDs: the agent did not keep it fresh", n, workload)
	}
	if ag.exited() {
		t.Errorf("spire-agent exited: %v", ag.err)
	}
	if n := ag.countLines(t, "Node attestation was successful"); n != 1 {
		t.Errorf("spire-agent logged %d successful node attestations, want 1", n)
	}
	if n := ag.countLines(t, "re-attest"); n != 0 {
		t.Errorf("spire-agent logged %d lines about re-attesting, want 0:\n%s", n, grepLines(ag.log, "re-attest"))
	}
}

// grepLines is the lines of a file containing s.
func grepLines(path, s string) string {
	data, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
