package peragent

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	debugv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/debug/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

// TestOneAgentManyEntries seeds N entries (ARBOR_PERAGENT_ENTRIES, CI
// 20000: past the size at which SPIRE's unpaged sync outgrew gRPC's 4 MB
// message limit, half of them with 4 selectors) under one node alias of an
// arbor server, then runs against it, one after the other, the arbor agent
// and a real spire-agent attested to that alias. Each must hold all N
// entries (and its alias entry) with an X509-SVID for every one, and a
// go-spiffe workload selected by the last entries gets exactly their
// SVIDs, verifying against the server's bundle. The time from start to the
// full cache is logged (docs/perf/peragent.md).
func TestOneAgentManyEntries(t *testing.T) {
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	n := entryCount(t)
	// Bounded in proportion to N: 100k takes a few minutes here.
	budget := 5*time.Minute + time.Duration(n)*6*time.Millisecond
	testkit.Context(t, budget)
	dir := testkit.ShortDir(t)
	srv := testkit.StartServer(t, server.Config{
		Name: "peragent", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true,
	})
	alias := spiffeid.RequireFromPath(td, "/peragent/node")
	sh := selfShape(t)
	took := seed(t, srv.Admin, alias, n, sh)
	t.Logf("seeded %d entries under %s in %v (%.0f entries/s)", n, alias, took.Round(time.Millisecond), float64(n)/took.Seconds())
	bundle, bundlePEM := serverBundle(t, srv.Admin)
	// The N entries and the agent's own node-alias entry.
	want := n + 1
	wait := 2*time.Minute + time.Duration(n)*3*time.Millisecond

	var arborTook, spireTook time.Duration
	t.Run("arbor-agent", func(t *testing.T) {
		att, err := unix.New(unix.Config{})
		if err != nil {
			t.Fatal(err)
		}
		health := freeAddr(t)
		adir := testkit.ShortDir(t)
		cfg := agent.Config{
			TrustDomain: td, ServerAddress: srv.AgentAddr().String(), TrustBundle: bundle.X509Authorities(),
			DataDir: filepath.Join(adir, "data"), SocketPath: filepath.Join(adir, "api.sock"),
			JoinToken: joinToken(t, srv.Admin, alias), HealthAddr: health,
			WorkloadAttestors: []agent.WorkloadAttestor{att},
		}
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		// Ready is the first complete sync: attested, every entry synced
		// and every due X509-SVID minted.
		testkit.StartAgent(t, cfg, wait)
		arborTook = time.Since(start)
		metrics := "http://" + health + "/metrics"
		m, err := scrape(metrics)
		if err != nil {
			t.Fatal(err)
		}
		if got := m["arbor_agent_entries"]; got != float64(want) {
			t.Errorf("arbor agent: arbor_agent_entries = %v, want %d", got, want)
		}
		if got := m["arbor_agent_x509_svids"]; got != float64(want) {
			t.Errorf("arbor agent: arbor_agent_x509_svids = %v, want %d", got, want)
		}
		first := m["arbor_agent_sync_duration_seconds_sum"]
		checkWorkload(t, "arbor agent", cfg.SocketPath, n, bundle)
		// A later sync: revisions only, every entry already cached.
		testkit.Poll(t, time.Minute, "a second sync", func() error {
			if m, err = scrape(metrics); err != nil {
				return err
			}
			if c := m["arbor_agent_sync_duration_seconds_count"]; c < 2 {
				return fmt.Errorf("%v syncs", c)
			}
			return nil
		})
		if got := m["arbor_agent_sync_failures_total"]; got != 0 {
			t.Errorf("arbor agent: %v failed syncs", got)
		}
		if got := m["arbor_agent_x509_svids"]; got != float64(want) {
			t.Errorf("arbor agent after a second sync: arbor_agent_x509_svids = %v, want %d", got, want)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		t.Logf("arbor agent: %d entries and %d X509-SVIDs cached %v after start (attestation, first sync, minting); next sync (revisions only) %v; Go heap of server+agent process %d MiB -> %d MiB",
			int(m["arbor_agent_entries"]), int(m["arbor_agent_x509_svids"]), arborTook.Round(time.Millisecond),
			time.Duration((m["arbor_agent_sync_duration_seconds_sum"]-first)*float64(time.Second)).Round(time.Millisecond),
			before.HeapAlloc>>20, after.HeapAlloc>>20)
	})

	t.Run("spire-agent", func(t *testing.T) {
		r := runSpireAgent(t, srv.AgentAddr().String(), bundlePEM, joinToken(t, srv.Admin, alias), want, wait)
		checkWorkload(t, "spire-agent", r.socket, n, bundle)
		spireTook = r.took
		t.Logf("spire-agent %s against arbor: %s", spireVersion, r)
	})
	if arborTook > 0 && spireTook > 0 {
		t.Logf("one agent, %d entries: arbor agent %v, spire-agent %s %v to a full cache (ratio arbor/spire %.2f)",
			n, arborTook.Round(time.Millisecond), spireVersion, spireTook.Round(time.Millisecond), arborTook.Seconds()/spireTook.Seconds())
	}
}

// metric is the sample whose name (labels aside) is name; NaN if none.
func metric(m map[string]float64, name string) float64 {
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			return v
		}
	}
	return math.NaN()
}

// names lists the samples whose names contain any of subs (for a failure
// message).
func names(m map[string]float64, subs ...string) string {
	var out []string
	for k, v := range m {
		for _, s := range subs {
			if strings.Contains(k, s) {
				out = append(out, fmt.Sprintf("%s=%v", k, v))
				break
			}
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// spireAgentRun is what runSpireAgent measured.
type spireAgentRun struct {
	socket   string        // its Workload API
	took     time.Duration // start to an X509-SVID cached for every entry
	entries  float64       // spire_agent_sync_entries_total
	cached   int32         // X509-SVIDs cached (debug API)
	rss, cpu float64       // MiB, seconds
	created  int           // "Creating X509-SVID" log lines
}

func (r *spireAgentRun) String() string {
	return fmt.Sprintf("%v entries synced, %d X509-SVIDs cached %v after start; %d \"Creating X509-SVID\" log lines; RSS %.0f MiB, CPU %.1f s",
		r.entries, r.cached, r.took.Round(time.Millisecond), r.created, r.rss, r.cpu)
}

// runSpireAgent runs a spire-agent of spireVersion against the server at
// addr (bootstrapped with bundlePEM, attested with token) until it has
// synced want entries and caches an X509-SVID for each, within wait, and
// fails the test otherwise.
func runSpireAgent(t *testing.T, addr string, bundlePEM []byte, token string, want int, wait time.Duration) *spireAgentRun {
	t.Helper()
	sdir := testkit.ShortDir(t)
	bundlePath := filepath.Join(sdir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &spireAgentRun{socket: filepath.Join(sdir, "api.sock")}
	adminSocket := filepath.Join(testkit.ShortDir(t), "admin.sock")
	prom := freeAddr(t)
	promHost, promPort, _ := strings.Cut(prom, ":")
	host, port, _ := strings.Cut(addr, ":")
	// x509_svid_cache_max_size above N: by default spire-agent keeps 1000
	// X509-SVIDs and mints the others when a workload asks.
	conf := fmt.Sprintf(`agent {
  data_dir                 = %q
  log_level                = "INFO"
  server_address           = %q
  server_port              = %q
  socket_path              = %q
  admin_socket_path        = %q
  trust_bundle_path        = %q
  trust_domain             = %q
  join_token               = %q
  x509_svid_cache_max_size = %d
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

telemetry {
  Prometheus {
    host = %q
    port = %s
  }
}
`, filepath.Join(sdir, "data"), host, port, r.socket, adminSocket, bundlePath, td.Name(), token, want+1000, promHost, promPort)
	confPath := filepath.Join(sdir, "agent.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(sdir, "spire-agent.log")
	start := time.Now()
	p := startProcess(t, "spire-agent "+spireVersion, logPath, filepath.Join(spireBin, "spire-agent"), "run", "-config", confPath)
	conn, err := grpc.NewClient("unix://"+adminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	debug := debugv1.NewDebugClient(conn)
	testkit.Poll(t, wait, "spire-agent caching an X509-SVID for every entry", func() error {
		if p.exited() {
			t.Fatalf("spire-agent exited: %v", p.err)
		}
		info, err := debug.GetInfo(testkit.Context(t, 10*time.Second), &debugv1.GetInfoRequest{})
		if err != nil {
			return err
		}
		if r.cached = info.CachedX509SvidsCount; int(r.cached) < want {
			return fmt.Errorf("%d X509-SVIDs cached, want %d", r.cached, want)
		}
		return nil
	})
	r.took = time.Since(start)
	if int(r.cached) != want {
		t.Errorf("spire-agent caches %d X509-SVIDs, want %d", r.cached, want)
	}
	m, err := scrape("http://" + prom + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	r.entries = metric(m, "spire_agent_sync_entries_total")
	if r.entries != float64(want) {
		t.Errorf("spire-agent: spire_agent_sync_entries_total = %v, want %d (metrics: %s)", r.entries, want, names(m, "entr", "lru"))
	}
	if records := metric(m, "spire_agent_lru_cache_record_map_size"); records != float64(want) {
		t.Errorf("spire-agent: spire_agent_lru_cache_record_map_size = %v, want %d", records, want)
	}
	if c := countIn(logPath, "larger than max"); c != 0 {
		t.Errorf("spire-agent logged %d messages over gRPC's size limit", c)
	}
	r.created = countIn(logPath, "Creating X509-SVID")
	if s, err := loadgen.ReadProc(p.cmd.Process.Pid); err == nil {
		r.rss, r.cpu = float64(s.RSSBytes)/(1<<20), s.CPUSeconds
	}
	return r
}
