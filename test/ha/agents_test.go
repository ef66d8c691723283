package ha

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

// arborAgent is a real `arbor agent run` process attested with a join
// token, given every replica's address.
type arborAgent struct {
	name       string
	id         spiffeid.ID
	socket     string
	healthAddr string
	workloads  []spiffeid.ID
	proc       *process
}

// startArborAgent registers two workload entries (X509-SVID TTL svidTTL)
// for a new agent and runs it against every replica of tr.
func startArborAgent(t *testing.T, tr *tier, i int, bundlePath string, svidTTL time.Duration) *arborAgent {
	t.Helper()
	dir := t.TempDir()
	k := i%len(tr.replicas) + 1
	token := tr.joinToken(k)
	tokenPath := filepath.Join(dir, "join.token")
	if err := os.WriteFile(tokenPath, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := &arborAgent{
		name:       fmt.Sprintf("arbor agent %d", i),
		id:         agentID(token),
		socket:     filepath.Join(testkit.ShortDir(t), "api.sock"),
		healthAddr: freeAddr(t),
	}
	for j := range 2 {
		ag.workloads = append(ag.workloads, spiffeid.RequireFromPathf(td, "/workload/%d/%d", i, j))
	}
	tr.createEntries(k, ag.id, svidTTL, ag.workloads...)
	ag.proc = startProcess(t, ag.name, filepath.Join(dir, "agent.log"), arborBin, "agent", "run",
		"--server-address", tr.addrs(), "--trust-domain", trustDomain,
		"--trust-bundle", bundlePath, "--join-token-file", tokenPath,
		"--data-dir", filepath.Join(dir, "data"), "--socket-path", ag.socket,
		"--health-listen", ag.healthAddr, "--sync-interval", "1s", "--log-level", "debug")
	return ag
}

// simulatedAgents seeds and attests 50 load generator agents of 10 entries
// each on tr, dialing addrs (one replica's address or the list). It is
// closed at the test's end.
func (tr *tier) simulatedAgents(ctx context.Context, addrs string) *loadgen.Generator {
	t := tr.t
	t.Helper()
	gen, err := loadgen.New(loadgen.Config{
		AdminSocket: tr.replicas[0].adminSock, ServerAddr: addrs, TrustDomain: td,
		Agents: 50, Entries: 500, EntriesPerAgent: 10, OtherParents: 1,
		RPCTimeout: 20 * time.Second, WarmupTimeout: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gen.Close() })
	if setup, err := gen.Setup(ctx); err != nil || setup.Errors != 0 {
		t.Fatalf("loadgen setup against %s: %v (%+v)", addrs, err, setup)
	}
	return gen
}

// startFleet runs three arbor agents given every replica's address, with
// two workload entries each (X509-SVID TTL workloadTTL), and waits until
// each serves its workloads' SVIDs. It returns the agents and, per Workload
// API socket, the IDs its workloads must get.
func (tr *tier) startFleet(t *testing.T) ([]*arborAgent, map[string][]spiffeid.ID) {
	t.Helper()
	bundlePath := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundlePath, tr.bundlePEM(1), 0o600); err != nil {
		t.Fatal(err)
	}
	var agents []*arborAgent
	sockets := map[string][]spiffeid.ID{}
	for i := range 3 {
		ag := startArborAgent(t, tr, i, bundlePath, workloadTTL)
		agents = append(agents, ag)
		sockets[ag.socket] = ag.workloads
	}
	for _, ag := range agents {
		ag.waitWorkloads(t)
	}
	return agents, sockets
}

// waitWorkloads waits until the agent serves an X509-SVID for each of its
// workloads.
func (ag *arborAgent) waitWorkloads(t *testing.T) {
	t.Helper()
	testkit.Poll(t, 90*time.Second, ag.name+" serving its workloads' SVIDs", func() error {
		if ag.proc.exited() {
			t.Fatalf("%s exited: %v\n%s", ag.name, ag.proc.err, tail(ag.proc.log, 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+ag.socket))
		if err != nil {
			return err
		}
		var got []string
		for _, s := range x.SVIDs {
			got = append(got, s.ID.String())
		}
		for _, id := range ag.workloads {
			if !slices.Contains(got, id.String()) {
				return fmt.Errorf("SVIDs %v, want %v", got, ag.workloads)
			}
		}
		return nil
	})
}

// checkNoReattestation fails the test unless the agent attested exactly
// once and never again.
func (ag *arborAgent) checkNoReattestation(t *testing.T) {
	t.Helper()
	if ag.proc.exited() {
		t.Errorf("%s exited: %v", ag.name, ag.proc.err)
	}
	if n := ag.proc.countLines(t, "node attested"); n != 1 {
		t.Errorf("%s: %d \"node attested\" log lines, want 1", ag.name, n)
	}
	if n := ag.proc.countLines(t, "re-attest"); n != 0 {
		t.Errorf("%s: %d log lines about re-attesting, want 0", ag.name, n)
	}
}

// workloadWatch fetches X509-SVIDs from Workload API sockets every period,
// as a workload would, and counts what went wrong: a failed fetch, a
// missing SVID, one that does not verify against the bundle the same fetch
// returned (expired included).
type workloadWatch struct {
	mu       sync.Mutex
	fetches  int
	failures []string
	serials  map[spiffeid.ID]map[string]bool // every SVID serial seen per ID
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

func watchWorkloads(sockets map[string][]spiffeid.ID, period time.Duration) *workloadWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workloadWatch{stop: cancel, serials: map[spiffeid.ID]map[string]bool{}}
	for sock, want := range sockets {
		w.wg.Go(func() {
			tick := time.NewTicker(period)
			defer tick.Stop()
			for {
				w.fetchOnce(ctx, sock, want)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return w
}

func (w *workloadWatch) fetchOnce(ctx context.Context, sock string, want []spiffeid.ID) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	x, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+sock))
	if ctx.Err() != nil {
		return // the watch stopped
	}
	var problems []string
	seen := map[spiffeid.ID]string{}
	if err != nil {
		problems = append(problems, fmt.Sprintf("%s: fetch: %v", sock, err))
	} else {
		now := time.Now()
		for _, id := range want {
			i := slices.IndexFunc(x.SVIDs, func(s *x509svid.SVID) bool { return s.ID == id })
			if i < 0 {
				problems = append(problems, fmt.Sprintf("%s: no SVID for %s", sock, id))
				continue
			}
			s := x.SVIDs[i]
			seen[id] = s.Certificates[0].SerialNumber.String()
			if _, _, err := x509svid.Verify(s.Certificates, x.Bundles); err != nil {
				problems = append(problems, fmt.Sprintf("%s: SVID %s does not verify: %v", sock, id, err))
			}
			if leaf := s.Certificates[0]; now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
				problems = append(problems, fmt.Sprintf("%s: SVID %s is outside its validity [%s, %s]", sock, id, leaf.NotBefore, leaf.NotAfter))
			}
		}
	}
	w.mu.Lock()
	w.fetches++
	w.failures = append(w.failures, problems...)
	for id, serial := range seen {
		if w.serials[id] == nil {
			w.serials[id] = map[string]bool{}
		}
		w.serials[id][serial] = true
	}
	w.mu.Unlock()
}

// distinctSVIDs is how many different X509-SVIDs (by serial) id had.
func (w *workloadWatch) distinctSVIDs(id spiffeid.ID) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.serials[id])
}

// finish stops the watch and returns the fetch count and the failures.
func (w *workloadWatch) finish() (int, []string) {
	w.stop()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fetches, w.failures
}

// serverWatch polls arbor agents' /ready every 50ms and keeps, per agent,
// when it reported which server.
type serverWatch struct {
	mu   sync.Mutex
	obs  map[string][]observation
	stop context.CancelFunc
	wg   sync.WaitGroup
}

type observation struct {
	at     time.Time
	server string // "" when not ready or not reachable
}

func watchServers(agents []*arborAgent) *serverWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &serverWatch{obs: map[string][]observation{}, stop: cancel}
	client := &http.Client{Timeout: time.Second}
	for _, ag := range agents {
		w.wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				s := readyServer(client, ag.healthAddr)
				w.mu.Lock()
				w.obs[ag.name] = append(w.obs[ag.name], observation{at: time.Now(), server: s})
				w.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return w
}

// current is the server an agent reported last.
func (w *serverWatch) current(name string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.obs[name]
	for i := len(o) - 1; i >= 0; i-- {
		if o[i].server != "" {
			return o[i].server
		}
	}
	return ""
}

// movedAway is when, after since, the agent first reported a server other
// than from; false when it has not.
func (w *serverWatch) movedAway(name, from string, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range w.obs[name] {
		if o.at.After(since) && o.server != "" && o.server != from {
			return o.at, true
		}
	}
	return time.Time{}, false
}

// notReady counts the observations after since where the agent's /ready
// did not answer ok.
func (w *serverWatch) notReady(name string, since time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, o := range w.obs[name] {
		if o.at.After(since) && o.server == "" {
			n++
		}
	}
	return n
}

func (w *serverWatch) finish() { w.stop(); w.wg.Wait() }

// percentiles formats the p50, p99 and max of ds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(s), at(0.5).Round(time.Millisecond),
		at(0.99).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// errorsByCode formats a loadgen error map.
func errorsByCode(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", c, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
