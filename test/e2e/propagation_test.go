package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// propagationEnv sets how many entries TestEntryPropagationSideBySide
// times on each side (CI's default is small; docs/performance.md's figure
// uses 40).
const propagationEnv = "ARBOR_PROPAGATION_SAMPLES"

// seenSVIDs records when a Workload API watcher first got each SPIFFE ID.
type seenSVIDs struct {
	mu   sync.Mutex
	at   map[spiffeid.ID]time.Time
	errs int
}

func (s *seenSVIDs) OnX509ContextUpdate(c *workloadapi.X509Context) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svid := range c.SVIDs {
		if _, ok := s.at[svid.ID]; !ok {
			s.at[svid.ID] = now
		}
	}
}

func (s *seenSVIDs) OnX509ContextWatchError(error) {
	s.mu.Lock()
	s.errs++
	s.mu.Unlock()
}

func (s *seenSVIDs) when(id spiffeid.ID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.at[id]
	return at, ok
}

// propagation creates samples entries one at a time under parent through
// the server's admin socket and returns, for each, the time from the
// BatchCreateEntry call to a Workload API watcher on agentSocket holding
// the SVID: what a workload waits for a new registration.
func propagation(t *testing.T, what, adminSocket, agentSocket string, parent spiffeid.ID, samples int) []time.Duration {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+adminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	entries := entryv1.NewEntryClient(conn)
	create := func(id spiffeid.ID) time.Time {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t0 := time.Now()
		resp, err := entries.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
			ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: parent.Path()},
			SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
			Selectors: []*types.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(os.Getuid())}},
		}}})
		if err != nil {
			t.Fatalf("%s: BatchCreateEntry: %v", what, err)
		}
		if st := resp.Results[0].Status; st.Code != 0 {
			t.Fatalf("%s: BatchCreateEntry %s: %v", what, id, st)
		}
		return t0
	}
	seen := &seenSVIDs{at: map[spiffeid.ID]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		workloadapi.WatchX509Context(ctx, seen, workloadapi.WithAddr("unix://"+agentSocket))
	}()
	defer func() { cancel(); <-done }()
	wait := func(id spiffeid.ID) time.Time {
		var at time.Time
		poll(t, 90*time.Second, what+": the watcher holding "+id.String(), func() error {
			var ok bool
			if at, ok = seen.when(id); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		return at
	}
	// A first entry, so the watcher has an identity and is streaming (an
	// agent with none refuses the watch, and the client backs off).
	wait(idOf(t, what, "warm", create))
	var out []time.Duration
	for i := range samples {
		// Start at a random point of the agent's sync cycle (the previous
		// sample ended at a sync; both agents sync every 5s by default).
		time.Sleep(time.Duration(rand.IntN(5000)) * time.Millisecond)
		id := mustID(t, fmt.Sprintf("/propagation/%s/%d", what, i))
		t0 := create(id)
		out = append(out, wait(id).Sub(t0))
	}
	slices.Sort(out)
	return out
}

func idOf(t *testing.T, what, name string, create func(spiffeid.ID) time.Time) spiffeid.ID {
	id := mustID(t, "/propagation/"+what+"/"+name)
	create(id)
	return id
}

// startArborAgentDefaults is startArborAgent with the agent's default sync
// interval, as a user runs it.
func startArborAgentDefaults(t *testing.T, addr string, bundlePEM []byte, token string) string {
	t.Helper()
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(shortTempDir(t, "ap"), "api.sock")
	proc := startProcess(t, "arbor agent", filepath.Join(dir, "arbor-agent.log"), nil, arborBin,
		"agent", "run", "--server-address", addr, "--trust-domain", td.Name(), "--trust-bundle", bundlePath,
		"--join-token", token, "--data-dir", filepath.Join(dir, "data"), "--socket-path", socket)
	poll(t, waitTimeout, "arbor agent's Workload API socket", func() error {
		if proc.exited() {
			t.Fatalf("arbor agent exited: %v\n%s", proc.err, tail(proc.log, 40))
		}
		_, err := os.Stat(socket)
		return err
	})
	return socket
}

// TestEntryPropagationSideBySide times, in one run, how long a new
// registration entry takes to reach a workload: BatchCreateEntry on the
// server's admin socket until a go-spiffe watcher on the agent holds the
// SVID, for arbor (server and agent) and for spire-server with spire-agent
// (the newest SPIRE peer), both with their default sync and cache
// settings. The assertion is that every SVID arrives; the times are logged
// as p50/p99 and ratios (docs/performance.md).
func TestEntryPropagationSideBySide(t *testing.T) {
	requireSetup(t)
	samples := 4
	if v := os.Getenv(propagationEnv); v != "" {
		var err error
		if samples, err = strconv.Atoi(v); err != nil || samples < 1 {
			t.Fatalf("%s=%q is not a positive number", propagationEnv, v)
		}
	}
	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	_, bundlePEM := a.bundlePEM(t)
	arborAlias := mustID(t, "/host/propagation-arbor")
	arborSocket := startArborAgentDefaults(t, a.addr(), bundlePEM, a.generateToken(t, arborAlias))
	arb := propagation(t, "arbor", a.adminSock, arborSocket, arborAlias, samples)

	p := spirePeers[len(spirePeers)-1]
	ss := startAgentSpireServer(t, p)
	spireAlias := mustID(t, "/host/propagation-spire")
	out := ss.mustCLI(t, "token", "generate", "-spiffeID", spireAlias.String())
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	token := strings.TrimSpace(strings.TrimPrefix(first, "Token:"))
	spireBundle := []byte(ss.mustCLI(t, "bundle", "show"))
	sag := startSpireAgentOf(t, p, td.Name(), ss.port, spireBundle, token)
	spi := propagation(t, "spire", ss.socket, sag.socket, spireAlias, samples)

	t.Logf("entry-to-SVID propagation, %d entries each: arbor p50 %v p99 %v; spire-server %s + spire-agent p50 %v p99 %v; ratio arbor/spire p50 %.2f p99 %.2f",
		samples, pct(arb, .5).Round(time.Millisecond), pct(arb, .99).Round(time.Millisecond), p.version,
		pct(spi, .5).Round(time.Millisecond), pct(spi, .99).Round(time.Millisecond),
		pct(arb, .5).Seconds()/pct(spi, .5).Seconds(), pct(arb, .99).Seconds()/pct(spi, .99).Seconds())
}
