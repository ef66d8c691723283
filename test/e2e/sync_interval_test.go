package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// agentSyncInterval is what the topologies below write in the agent block:
// neither the built-in default (5s) nor what arbor up used to pass (2s).
const agentSyncInterval = 3 * time.Second

// syncTree is a topology of a root and a child "leaf" whose agent block
// sets sync_interval = agentSyncInterval and puts its socket and data
// directory where no default would.
type syncTree struct {
	topo            string
	rootPort        int
	rootHealth      string // the root's /metrics
	socket, dataDir string // the leaf's agent block's
}

func syncTopology(t *testing.T, dir string) syncTree {
	t.Helper()
	s := syncTree{
		rootPort:   freePort(t),
		rootHealth: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		socket:     filepath.Join(dir, "leaf-agent", "api.sock"),
		dataDir:    filepath.Join(dir, "leaf-agent", "data"),
		topo:       filepath.Join(dir, "sync.hcl"),
	}
	hcl := fmt.Sprintf(`trust_domain = %q

server "root" {
  listen        = "127.0.0.1:%d"
  health_listen = %q
  state_dir     = %q
  ca_ttl        = "48h"
}

server "leaf" {
  parent        = "root"
  listen        = "127.0.0.1:%d"
  health_listen = "off"
  state_dir     = %q
  ca_ttl        = "24h"
  agent {
    node_attestor "join_token" {}
    sync_interval = %q
    socket_path   = %q
    data_dir      = %q
  }
}
`, td.Name(), s.rootPort, s.rootHealth, filepath.Join(dir, "root"), freePort(t), filepath.Join(dir, "leaf"),
		agentSyncInterval.String(), s.socket, s.dataDir)
	if err := os.WriteFile(s.topo, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// entrySyncCalls is how many entry syncs (SyncAuthorizedEntries or
// GetAuthorizedEntries) the server at addr has answered, from its
// arbor_api_calls_total metric.
func entrySyncCalls(addr string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "arbor_api_calls_total{") ||
			!(strings.Contains(line, "/SyncAuthorizedEntries\"") || strings.Contains(line, "/GetAuthorizedEntries\"")) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		n += int(v)
	}
	return n, sc.Err()
}

// observeSyncPeriod samples the server's entry-sync count every 50ms until
// it has seen gaps+1 syncs after the first, and returns the median time
// between two of them: the period of the one agent attached to it.
func observeSyncPeriod(t *testing.T, addr string, gaps int) (time.Duration, []time.Duration) {
	t.Helper()
	deadline := time.Now().Add(time.Duration(gaps+3) * 2 * agentSyncInterval)
	var at []time.Time
	last := -1
	for len(at) < gaps+1 {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d entry syncs at %s before the deadline, want %d", len(at), addr, gaps+1)
		}
		n, err := entrySyncCalls(addr)
		if err != nil {
			t.Fatalf("reading %s/metrics: %v", addr, err)
		}
		if last >= 0 && n > last {
			at = append(at, time.Now())
		}
		last = n
		time.Sleep(50 * time.Millisecond)
	}
	var d []time.Duration
	for i := 1; i < len(at); i++ {
		d = append(d, at[i].Sub(at[i-1]).Round(10*time.Millisecond))
	}
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	return sorted[len(sorted)/2], d
}

// checkSyncPeriod requires the observed period to be the agent block's
// sync_interval rather than the default (5s) or a hard-coded 2s: within
// half a second, which the 50ms sampling and a sync's own duration stay
// well inside.
func checkSyncPeriod(t *testing.T, who string, median time.Duration, gaps []time.Duration) {
	t.Helper()
	t.Logf("%s: entry syncs seen by the root every %v (median; gaps %v)", who, median, gaps)
	if diff := median - agentSyncInterval; diff < -500*time.Millisecond || diff > 500*time.Millisecond {
		t.Errorf("%s syncs every %v, want the agent block's sync_interval %v", who, median, agentSyncInterval)
	}
}

// TestAgentBlockReachesAgentOfUp: arbor up starts the co-located agent of
// a child from the topology, so the agent block's sync_interval is the
// period at which the parent sees that agent sync.
func TestAgentBlockReachesAgentOfUp(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "syn")
	tree := syncTopology(t, dir)
	up := runUp(t, tree.topo, "--no-demo")
	up.waitOutput(t, "ready;", 2*time.Minute)
	if _, err := os.Stat(tree.socket); err != nil {
		t.Errorf("the co-located agent does not serve on the agent block's socket_path: %v", err)
	}
	median, gaps := observeSyncPeriod(t, tree.rootHealth, 4)
	checkSyncPeriod(t, "the agent arbor up started", median, gaps)
	stopUp(t, up)
}

// TestAgentBlockReachesAgentRun: `arbor agent run --topology FILE --node
// NAME` is the agent the block describes: attested to NAME's parent, on the
// block's socket_path and data_dir, syncing every sync_interval.
func TestAgentBlockReachesAgentRun(t *testing.T) {
	requireSetup(t)
	dir := shortTempDir(t, "syn")
	tree := syncTopology(t, dir)
	root := &arborServer{topology: tree.topo, stateDir: filepath.Join(dir, "root"),
		adminSock: filepath.Join(dir, "root", "admin.sock"), port: tree.rootPort, logDir: dir}
	root.start(t)
	_, bundle := root.bundlePEM(t)
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	token := root.generateToken(t, mustID(t, "/arbor/agent/leaf"))
	ag := startProcess(t, "arbor agent run", filepath.Join(dir, "agent.log"), nil, arborBin,
		"agent", "run", "--topology", tree.topo, "--node", "leaf", "--trust-bundle", bundlePath, "--join-token", token)
	poll(t, waitTimeout, "the agent serving on the agent block's socket_path", func() error {
		if ag.exited() {
			t.Fatalf("arbor agent run exited: %v\n%s", ag.err, tail(ag.log, 30))
		}
		_, err := os.Stat(tree.socket)
		return err
	})
	if entries, err := os.ReadDir(tree.dataDir); err != nil || len(entries) == 0 {
		t.Errorf("the agent keeps nothing in the agent block's data_dir %s (%v)", tree.dataDir, err)
	}
	median, gaps := observeSyncPeriod(t, tree.rootHealth, 4)
	checkSyncPeriod(t, "arbor agent run --topology --node leaf", median, gaps)
	ag.stop(t)
}
