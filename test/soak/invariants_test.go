package soak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit"
)

// workloadSVIDTTL is the X509-SVID lifetime of the workloads' entries:
// short, so that they renew (at half-life) several times during a run.
const workloadSVIDTTL = 40 * time.Second

// workloadsPerLeaf is how many entries (and go-spiffe watchers) each leaf's
// workload agent serves to this test process.
const workloadsPerLeaf = 3

// watcher is one go-spiffe Workload API client watching its X509 context
// on a leaf's workload agent.
type watcher struct {
	leaf string
	ids  []spiffeid.ID // the workload entries it must hold

	mu      sync.Mutex
	latest  *workloadapi.X509Context
	updated time.Time
	updates int
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.latest, w.updated = c, time.Now()
	w.updates++
}

// OnX509ContextWatchError: the client retries with its own backoff; what
// matters is what the workload holds meanwhile, which the checker checks.
func (w *watcher) OnX509ContextWatchError(error) {}

func (w *watcher) held() (*workloadapi.X509Context, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.updated
}

// registerWorkloads creates the workload entries on every leaf, parented to
// the node alias of its workload agent and selecting this process's uid,
// and starts the watchers; it waits until every watcher holds all of its
// SVIDs.
func (tr *tree) registerWorkloads(ctx context.Context) []*watcher {
	t := tr.t
	t.Helper()
	var out []*watcher
	uid := strconv.Itoa(os.Getuid())
	for _, leaf := range tr.leaves {
		m := tr.serverNamed(leaf)
		w := &watcher{leaf: leaf}
		var entries []*types.Entry
		for i := range workloadsPerLeaf {
			id := spiffeid.RequireFromPath(td, fmt.Sprintf("/soak/workload/%s/%d", leaf, i))
			w.ids = append(w.ids, id)
			entries = append(entries, &types.Entry{
				ParentId:    &types.SPIFFEID{TrustDomain: trustDomain, Path: "/demo-node/" + leaf},
				SpiffeId:    &types.SPIFFEID{TrustDomain: trustDomain, Path: id.Path()},
				Selectors:   []*types.Selector{{Type: "unix", Value: "uid:" + uid}},
				X509SvidTtl: int32(workloadSVIDTTL / time.Second),
			})
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := entryv1.NewEntryClient(m.admin.Conn()).BatchCreateEntry(cctx, &entryv1.BatchCreateEntryRequest{Entries: entries})
		cancel()
		if err != nil {
			t.Fatalf("%s: BatchCreateEntry: %v", leaf, err)
		}
		for _, r := range resp.Results {
			if codes.Code(r.GetStatus().GetCode()) != codes.OK {
				t.Fatalf("%s: BatchCreateEntry: %v", leaf, r.GetStatus())
			}
		}
		_, sock := workloadAgentPaths(m.srv)
		// Two watchers per workload agent: two workloads of one node.
		for range 2 {
			ww := &watcher{leaf: leaf, ids: w.ids}
			c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
			if err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithCancel(ctx)
			wdone := make(chan struct{})
			go func() {
				defer close(wdone)
				c.WatchX509Context(wctx, ww)
			}()
			t.Cleanup(func() { wcancel(); <-wdone; c.Close() })
			out = append(out, ww)
		}
	}
	testkit.Poll(t, 60*time.Second, "every watcher holding its workloads' SVIDs", func() error {
		for _, w := range out {
			if err := w.holdsAll(); err != nil {
				return err
			}
		}
		return nil
	})
	return out
}

// holdsAll is nil when the watcher's latest context has an SVID for each
// of its workload IDs.
func (w *watcher) holdsAll() error {
	c, _ := w.held()
	if c == nil {
		return fmt.Errorf("watcher on %s has no X509 context", w.leaf)
	}
	for _, id := range w.ids {
		if !slices.ContainsFunc(c.SVIDs, func(s *x509svid.SVID) bool { return s.ID == id }) {
			return fmt.Errorf("watcher on %s holds no SVID for %s", w.leaf, id)
		}
	}
	return nil
}

// svidChecker checks every few hundred milliseconds that every SVID every
// watcher holds is unexpired and chains to the root's bundle.
type svidChecker struct {
	watchers []*watcher
	roots    *x509bundle.Bundle
	stopCh   chan struct{}
	done     chan struct{}

	mu       sync.Mutex
	checks   int
	failures []string
	serials  map[spiffeid.ID]map[string]bool
}

func startSVIDChecker(tr *tree, ws []*watcher, every time.Duration) *svidChecker {
	c := &svidChecker{watchers: ws, roots: x509bundle.FromX509Authorities(td, tr.rootCAs),
		stopCh: make(chan struct{}), done: make(chan struct{}), serials: map[spiffeid.ID]map[string]bool{}}
	go func() {
		defer close(c.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			c.check()
			select {
			case <-c.stopCh:
				return
			case <-tick.C:
			}
		}
	}()
	tr.t.Cleanup(c.stop)
	return c
}

func (c *svidChecker) stop() {
	select {
	case <-c.stopCh:
	default:
		close(c.stopCh)
	}
	<-c.done
}

func (c *svidChecker) check() {
	now := time.Now()
	var failures []string
	note := map[spiffeid.ID]string{}
	for _, w := range c.watchers {
		ctx, _ := w.held()
		if ctx == nil {
			failures = append(failures, fmt.Sprintf("%s watcher on %s holds nothing", now.Format("15:04:05.000"), w.leaf))
			continue
		}
		for _, s := range ctx.SVIDs {
			leaf := s.Certificates[0]
			if !now.Before(leaf.NotAfter) {
				failures = append(failures, fmt.Sprintf("%s %s on %s: held SVID (serial %v) expired at %s",
					now.Format("15:04:05.000"), s.ID, w.leaf, leaf.SerialNumber, leaf.NotAfter.Format("15:04:05")))
				continue
			}
			if _, _, err := x509svid.Verify(s.Certificates, c.roots); err != nil {
				failures = append(failures, fmt.Sprintf("%s %s on %s: held SVID (serial %v) does not chain to the root bundle: %v",
					now.Format("15:04:05.000"), s.ID, w.leaf, leaf.SerialNumber, err))
				continue
			}
			note[s.ID] = leaf.SerialNumber.String()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks++
	c.failures = append(c.failures, failures...)
	for id, serial := range note {
		if c.serials[id] == nil {
			c.serials[id] = map[string]bool{}
		}
		c.serials[id][serial] = true
	}
}

func (c *svidChecker) result() (checks int, failures []string, distinct map[spiffeid.ID]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	distinct = map[spiffeid.ID]int{}
	for id, s := range c.serials {
		distinct[id] = len(s)
	}
	return c.checks, slices.Clone(c.failures), distinct
}

// writer keeps creating registration entries on random servers of the tree
// through their admin sockets, and deleting some of those it created,
// recording what each server acknowledged.
type writer struct {
	servers []*member
	parent  *types.SPIFFEID
	rng     *mrand.Rand

	mu sync.Mutex
	// Per server: entries whose creation was acknowledged (entry ID ->
	// SPIFFE ID path) and not since deleted; entries whose deletion was
	// acknowledged; and entries whose fate is unknown (an unanswered call).
	created   map[string]map[string]string
	deleted   map[string]map[string]string
	uncertain map[string]int
	creates   int
	deletes   int
	failed    int
	n         int
}

func newWriter(servers []*member, seed uint64) *writer {
	w := &writer{servers: servers, parent: &types.SPIFFEID{TrustDomain: trustDomain, Path: "/soak/writer"},
		rng:     mrand.New(mrand.NewPCG(seed, 2)),
		created: map[string]map[string]string{}, deleted: map[string]map[string]string{}, uncertain: map[string]int{}}
	for _, s := range servers {
		w.created[s.srv.Name] = map[string]string{}
		w.deleted[s.srv.Name] = map[string]string{}
	}
	return w
}

// run writes until ctx ends, one call every `every`.
func (w *writer) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		s := w.servers[w.rng.IntN(len(w.servers))]
		del := w.rng.IntN(4) == 0 && len(w.created[s.srv.Name]) > 0
		var victim, victimPath string
		if del {
			ids := slices.Sorted(maps.Keys(w.created[s.srv.Name]))
			victim = ids[w.rng.IntN(len(ids))]
			victimPath = w.created[s.srv.Name][victim]
			// Neither required nor gone while the call is out.
			delete(w.created[s.srv.Name], victim)
		}
		w.n++
		n := w.n
		w.mu.Unlock()
		if del {
			w.remove(ctx, s, victim, victimPath)
		} else {
			w.create(ctx, s, n)
		}
	}
}

func (w *writer) create(ctx context.Context, s *member, n int) {
	path := fmt.Sprintf("/soak/written/%s/%d", s.srv.Name, n)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := entryv1.NewEntryClient(s.admin.Conn()).BatchCreateEntry(cctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{{
		ParentId:  w.parent,
		SpiffeId:  &types.SPIFFEID{TrustDomain: trustDomain, Path: path},
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(100000+n)}},
	}}})
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err != nil:
		// Maybe written, maybe not: an unanswered call promises nothing.
		w.uncertain[s.srv.Name]++
		w.failed++
	case codes.Code(resp.Results[0].GetStatus().GetCode()) != codes.OK:
		w.failed++
	default:
		w.created[s.srv.Name][resp.Results[0].Entry.Id] = path
		w.creates++
	}
}

func (w *writer) remove(ctx context.Context, s *member, id, path string) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := entryv1.NewEntryClient(s.admin.Conn()).BatchDeleteEntry(cctx, &entryv1.BatchDeleteEntryRequest{Ids: []string{id}})
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err != nil:
		w.uncertain[s.srv.Name]++
		w.failed++
	case codes.Code(resp.Results[0].GetStatus().GetCode()) != codes.OK:
		// Refused: the entry is still there and still required.
		w.created[s.srv.Name][id] = path
		w.failed++
	default:
		w.deleted[s.srv.Name][id] = path
		w.deletes++
	}
}

// verify checks server s against what it acknowledged: every acknowledged
// create is there, no acknowledged delete is.
func (w *writer) verify(ctx context.Context, s *member) error {
	w.mu.Lock()
	want := maps.Clone(w.created[s.srv.Name])
	gone := maps.Clone(w.deleted[s.srv.Name])
	w.mu.Unlock()
	es, err := s.admin.ListEntries(ctx, admin.EntryFilter{ParentID: "spiffe://" + trustDomain + w.parent.Path})
	if err != nil {
		return err
	}
	have := map[string]string{}
	for _, e := range es {
		have[e.Id] = e.SpiffeId.GetPath()
	}
	var problems []string
	for id, path := range want {
		if have[id] != path {
			problems = append(problems, fmt.Sprintf("acknowledged entry %s (%s) is missing", id, path))
		}
	}
	for id, path := range gone {
		if _, ok := have[id]; ok {
			problems = append(problems, fmt.Sprintf("entry %s (%s) is back after its deletion was acknowledged", id, path))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%s: %d of %d acknowledged creates and %d deletes broken: %s", s.name, len(problems), len(want), len(gone), strings.Join(first(problems, 5), "; "))
	}
	return nil
}

func (w *writer) counts() (creates, deletes, failed, uncertain int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.uncertain {
		uncertain += n
	}
	return w.creates, w.deletes, w.failed, uncertain
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}

// agentSets is, per server, the SPIFFE IDs of the agents attested to it.
type agentSets map[string][]string

func (tr *tree) listAgents(ctx context.Context) (agentSets, error) {
	out := agentSets{}
	for _, s := range tr.servers {
		as, err := s.admin.ListAgents(ctx, admin.AgentFilter{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		var ids []string
		for _, a := range as {
			ids = append(ids, a.GetId().GetPath())
		}
		slices.Sort(ids)
		out[s.srv.Name] = ids
	}
	return out, nil
}

// sameAgents is nil when every server lists exactly the agents of want:
// no agent attested again (a new ID), none lost.
func (tr *tree) sameAgents(ctx context.Context, want agentSets) error {
	got, err := tr.listAgents(ctx)
	if err != nil {
		return err
	}
	var problems []string
	for name, ids := range want {
		g := got[name]
		for _, id := range g {
			if !slices.Contains(ids, id) {
				problems = append(problems, fmt.Sprintf("%s has a new agent %s (an agent attested again)", name, id))
			}
		}
		for _, id := range ids {
			if !slices.Contains(g, id) {
				problems = append(problems, fmt.Sprintf("%s lost agent %s", name, id))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(first(problems, 5), "; "))
	}
	return nil
}

// intermediates asks for an intermediate CA the way each downstream server
// does: with its downstream SVID from its co-located agent's Workload API,
// NewDownstreamX509CA at its parent. One upstream per downstream server.
type intermediates struct {
	ups map[string]*downstream.Upstream // by child server name
	key *ecdsa.PrivateKey
}

func (tr *tree) newIntermediates(ctx context.Context) *intermediates {
	t := tr.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	in := &intermediates{ups: map[string]*downstream.Upstream{}, key: key}
	for _, s := range tr.servers {
		colo := tr.colos[s.srv.Name]
		if colo == nil {
			continue
		}
		parent := tr.serverNamed(s.srv.Parent)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		up, err := downstream.New(wctx, downstream.Config{
			TrustDomain:     td,
			ParentAddress:   parent.srv.Address,
			WorkloadAPIAddr: "unix://" + s.srv.Agent.SocketPath,
			CallTimeout:     3 * time.Second,
		})
		cancel()
		if err != nil {
			t.Fatalf("downstream upstream for %s: %v", s.srv.Name, err)
		}
		t.Cleanup(func() { up.Close() })
		in.ups[s.srv.Name] = up
	}
	return in
}

// mint is nil once child's parent signed an intermediate for child's SVID.
func (in *intermediates) mint(ctx context.Context, child string) error {
	up := in.ups[child]
	if up == nil {
		return fmt.Errorf("%s has no parent", child)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ca, err := up.MintX509CA(cctx, in.key, time.Minute)
	if err != nil {
		return err
	}
	if ca.Cert == nil || !ca.Cert.IsCA {
		return errors.New("the parent signed no CA certificate")
	}
	return nil
}

func (tr *tree) serverNamed(name string) *member {
	for _, s := range tr.servers {
		if s.srv.Name == name {
			return s
		}
	}
	tr.t.Fatalf("no server %q", name)
	return nil
}
