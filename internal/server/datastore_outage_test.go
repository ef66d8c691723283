package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// outageFor is how long TestServesAgentsThroughDatastoreOutage keeps
// PostgreSQL stopped while it drives agent calls (the process-level test in
// test/ha stops it for 30 s).
const outageFor = 3 * time.Second

// TestServesAgentsThroughDatastoreOutage runs two replicas of a tier on a
// private PostgreSQL cluster and stops the cluster: both replicas keep
// serving a known agent from memory (entry syncs, X509-SVIDs, JWT-SVIDs,
// the bundle and a federated one, and the first use of an agent SVID renewed just before the
// outage), keep refusing a banned agent, and answer writes Unavailable; the
// health endpoint stays ready and says the datastore is down. After the
// cluster starts again writes succeed without a restart, every entry written
// before, just before and after the outage is served by both replicas, the
// counts agree, and a ban made on one replica reaches the other.
func TestServesAgentsThroughDatastoreOutage(t *testing.T) {
	pg := testkit.StartPostgres(t)
	replica := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", pg.DSN(), 100*time.Millisecond
		c.HealthAddr = "127.0.0.1:0"
	}
	a := startServer(t, replica)
	b := startServer(t, replica)
	waitFor(t, "both roots in both replicas' bundles", func() bool {
		return len(a.snapshot().Bundle.X509Authorities) == 2 && len(b.snapshot().Bundle.X509Authorities) == 2
	})
	a.bundle, b.bundle = b.snapshotBundle(), b.snapshotBundle()
	replicas := []*harness{a, b}

	agent := a.newAgent()
	banned := a.newAgent()
	entryFor := func(name string) *types.Entry {
		return &types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/outage/" + name), Selectors: []*types.Selector{sel("unix", "uid:"+name)}}
	}
	synced := func(h *harness, s *x509svid.SVID) ([]string, error) {
		resp, err := entryv1.NewEntryClient(h.dial(s)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, e := range resp.Entries {
			ids = append(ids, e.Id)
		}
		slices.Sort(ids)
		return ids, nil
	}
	serves := func(h *harness, s *x509svid.SVID, ids ...string) func() bool {
		return func() bool {
			got, err := synced(h, s)
			return err == nil && !slices.ContainsFunc(ids, func(id string) bool { return !slices.Contains(got, id) })
		}
	}

	// Before the outage: an agent SVID renewed on A and not used yet, an
	// agent banned on B, and entries that B has applied.
	key := newKey(t)
	renewResp := must(agentv1.NewAgentClient(a.dial(agent)).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)}}))(t)
	renewed := svidFrom(t, renewResp.Svid, key)
	must(agentv1.NewAgentClient(b.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(banned.ID.Path())}))(t)
	waitFor(t, "replica A refusing the agent banned on B", func() bool {
		_, err := synced(a, banned)
		return status.Code(err) == codes.PermissionDenied
	})
	pre := a.createEntry(entryFor("pre"))
	waitFor(t, "replica B serving the entry made on A", serves(b, agent, pre))
	// B applied pre's event in a poll whose node phase then read the
	// renewal (committed earlier); pre2, made after, is seen in a later poll.
	pre2 := a.createEntry(entryFor("pre2"))
	waitFor(t, "replica B serving the second entry made on A", serves(b, agent, pre2))
	// A federated bundle, set on A and read by the agent through each
	// replica (as agents do at every sync).
	partner := &types.Bundle{TrustDomain: "partner.test", X509Authorities: []*types.X509Certificate{{Asn1: selfSignedCA(t, "partner").Raw}}}
	set := must(bundlev1.NewBundleClient(a.admin).BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{partner}}))(t)
	if st := set.Results[0].Status; st.Code != 0 {
		t.Fatalf("BatchSetFederatedBundle: %v", st)
	}
	federated := func(h *harness) error {
		fb, err := bundlev1.NewBundleClient(h.dial(agent)).GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: "partner.test"})
		if err == nil && (len(fb.X509Authorities) != 1 || string(fb.X509Authorities[0].Asn1) != string(partner.X509Authorities[0].Asn1)) {
			err = fmt.Errorf("got %d authorities, not the partner's one", len(fb.X509Authorities))
		}
		return err
	}
	// A child tier lists them on its parent (admin here, same handler).
	listed := func(h *harness) error {
		resp, err := bundlev1.NewBundleClient(h.admin).ListFederatedBundles(ctxT(t), &bundlev1.ListFederatedBundlesRequest{})
		if err == nil && (len(resp.Bundles) != 1 || resp.Bundles[0].TrustDomain != "partner.test") {
			err = fmt.Errorf("listed %d bundles, want partner.test alone", len(resp.Bundles))
		}
		return err
	}
	for _, h := range replicas {
		if err := federated(h); err != nil {
			t.Fatalf("GetFederatedBundle before the outage: %v", err)
		}
		if err := listed(h); err != nil {
			t.Fatalf("ListFederatedBundles before the outage: %v", err)
		}
	}
	unusedToken := b.token(600)
	last := a.createEntry(entryFor("last")) // just before the outage; B may not have it yet
	for _, h := range replicas {
		if up := datastoreUp(t, h); up != 1 {
			t.Fatalf("arbor_server_datastore_up before the outage = %v, want 1", up)
		}
	}

	pg.Stop(t)
	start := time.Now()

	// Writes are refused with Unavailable, on both replicas, never Internal.
	for i, h := range replicas {
		name := fmt.Sprintf("replica %c", 'A'+i)
		res := must(entryv1.NewEntryClient(h.admin).BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{entryFor("during")}}))(t)
		if got := codes.Code(res.Results[0].Status.Code); got != codes.Unavailable {
			t.Errorf("%s: BatchCreateEntry during the outage: status %v %q, want Unavailable", name, got, res.Results[0].Status.Message)
		}
		_, err := agentv1.NewAgentClient(h.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(agent.ID.Path())})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: BanAgent during the outage: %v, want Unavailable", name, err)
		}
		_, err = agentv1.NewAgentClient(h.admin).CreateJoinToken(ctxT(t), &agentv1.CreateJoinTokenRequest{Ttl: 60})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: CreateJoinToken during the outage: %v, want Unavailable", name, err)
		}
		_, err = agentv1.NewAgentClient(h.dial(agent)).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, newKey(t))}})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: RenewAgent during the outage: %v, want Unavailable", name, err)
		}
		if err != nil && strings.Contains(status.Convert(err).Message(), "127.0.0.1") {
			t.Errorf("%s: RenewAgent's status %q leaks the datastore's address", name, status.Convert(err).Message())
		}
		if _, err := h.attest(unusedToken); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: AttestAgent during the outage: %v, want Unavailable", name, err)
		}
		waitFor(t, name+" reporting the datastore down", func() bool { return datastoreUp(t, h) == 0 })
		ready := httpGet(t, h, "/ready")
		if !strings.HasPrefix(ready, "ready") || !strings.Contains(ready, "datastore: unavailable") {
			t.Errorf("%s: /ready during the outage = %q, want ready with the datastore reported unavailable", name, ready)
		}
	}

	// Agents are served from memory for the whole outage.
	rounds, failures := 0, 0
	fail := func(format string, args ...any) {
		failures++
		if failures <= 10 {
			t.Errorf(format, args...)
		}
	}
	for time.Since(start) < outageFor {
		rounds++
		for i, h := range replicas {
			name := fmt.Sprintf("replica %c", 'A'+i)
			for _, s := range []*x509svid.SVID{agent, renewed} {
				got, err := synced(h, s)
				if err != nil || !slices.Contains(got, pre) || !slices.Contains(got, pre2) {
					fail("%s: sync during the outage = %v, %v; want entries %s and %s", name, got, err, pre, pre2)
				}
			}
			if _, err := h.workloadSVID(renewed, pre); err != nil {
				fail("%s: X509-SVID during the outage: %v", name, err)
			}
			if _, err := svidv1.NewSVIDClient(h.dial(renewed)).NewJWTSVID(ctxT(t), &svidv1.NewJWTSVIDRequest{EntryId: pre2, Audience: []string{"db"}}); err != nil {
				fail("%s: JWT-SVID during the outage: %v", name, err)
			}
			if bundle, err := bundlev1.NewBundleClient(h.dial(agent)).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{}); err != nil || len(bundle.X509Authorities) != 2 {
				fail("%s: GetBundle during the outage: %v", name, err)
			}
			if _, err := synced(h, banned); status.Code(err) != codes.PermissionDenied {
				fail("%s: banned agent's sync during the outage: %v, want PermissionDenied", name, err)
			}
			if err := federated(h); err != nil {
				fail("%s: GetFederatedBundle during the outage: %v", name, err)
			}
			if err := listed(h); err != nil {
				fail("%s: ListFederatedBundles during the outage: %v", name, err)
			}
		}
	}
	t.Logf("PostgreSQL stopped for %v: %d rounds of agent calls on both replicas, %d failures", time.Since(start).Round(time.Millisecond), rounds, failures)

	pg.Start(t)

	// Writes succeed again without restarting anything (the first tries
	// may still find the pool reconnecting: Unavailable, nothing else).
	var after string
	testkit.Poll(t, 30*time.Second, "entry create after the outage", func() error {
		res, err := entryv1.NewEntryClient(a.admin).BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{entryFor("after")}})
		if err != nil {
			t.Fatalf("BatchCreateEntry after the outage: %v", err)
		}
		r := res.Results[0]
		switch codes.Code(r.Status.Code) {
		case codes.OK:
			after = r.Entry.Id
			return nil
		case codes.Unavailable:
			return fmt.Errorf("still unavailable: %s", r.Status.Message)
		}
		t.Fatalf("BatchCreateEntry after the outage: status %v %q", codes.Code(r.Status.Code), r.Status.Message)
		return nil
	})
	all := []string{pre, pre2, last, after}
	slices.Sort(all)
	for i, h := range replicas {
		name := fmt.Sprintf("replica %c", 'A'+i)
		waitFor(t, name+" serving every entry written before, just before and after the outage", func() bool {
			got, err := synced(h, agent)
			return err == nil && slices.Equal(got, all)
		})
		waitFor(t, name+" reporting the datastore up", func() bool { return datastoreUp(t, h) == 1 })
		if ready := httpGet(t, h, "/ready"); strings.TrimSpace(ready) != "ready" {
			t.Errorf("%s: /ready after the outage = %q, want ready", name, ready)
		}
	}
	ca := must(entryv1.NewEntryClient(a.admin).CountEntries(ctxT(t), &entryv1.CountEntriesRequest{}))(t)
	cb := must(entryv1.NewEntryClient(b.admin).CountEntries(ctxT(t), &entryv1.CountEntriesRequest{}))(t)
	if ca.Count != int32(len(all)) || cb.Count != int32(len(all)) {
		t.Errorf("entry counts after the outage: A %d, B %d, want %d on both", ca.Count, cb.Count, len(all))
	}
	// The join token refused during the outage was not consumed.
	if _, err := a.attest(unusedToken); err != nil {
		t.Fatalf("attest after the outage with the token refused during it: %v", err)
	}
	waitFor(t, "replica B knowing the agent attested on A after the outage", func() bool {
		n, err := agentv1.NewAgentClient(b.admin).CountAgents(ctxT(t), &agentv1.CountAgentsRequest{})
		return err == nil && n.Count == 3
	})
	na := must(agentv1.NewAgentClient(a.admin).CountAgents(ctxT(t), &agentv1.CountAgentsRequest{}))(t)
	nb := must(agentv1.NewAgentClient(b.admin).CountAgents(ctxT(t), &agentv1.CountAgentsRequest{}))(t)
	if na.Count != 3 || nb.Count != 3 {
		t.Errorf("agent counts after the outage: A %d, B %d, want 3 on both", na.Count, nb.Count)
	}

	// The renewed SVID's promotion, deferred during the outage, happens at
	// its first use now; then the old SVID is refused on both replicas.
	if _, err := synced(a, renewed); err != nil {
		t.Fatalf("renewed agent SVID on A after the outage: %v", err)
	}
	for i, h := range replicas {
		waitFor(t, fmt.Sprintf("replica %c refusing the agent's old SVID once the renewed one is promoted", 'A'+i), func() bool {
			_, err := synced(h, agent)
			return status.Code(err) == codes.PermissionDenied
		})
	}
	// The ban made before the outage still holds, and a new one made on B
	// reaches A.
	for _, h := range replicas {
		if _, err := synced(h, banned); status.Code(err) != codes.PermissionDenied {
			t.Errorf("banned agent after the outage: %v, want PermissionDenied", err)
		}
	}
	must(agentv1.NewAgentClient(b.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(agent.ID.Path())}))(t)
	waitFor(t, "replica A refusing the agent banned on B after the outage", func() bool {
		_, err := synced(a, renewed)
		return status.Code(err) == codes.PermissionDenied
	})
}

// httpGet returns the body of path on h's health listener.
func httpGet(t *testing.T, h *harness, path string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + h.srv.HealthAddr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body := must(io.ReadAll(resp.Body))(t)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	return string(body)
}

// datastoreUp reads arbor_server_datastore_up from h's /metrics (-1 if
// missing).
func datastoreUp(t *testing.T, h *harness) float64 {
	t.Helper()
	for line := range strings.SplitSeq(httpGet(t, h, "/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, "arbor_server_datastore_up "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// TestDatastoreHangIsBoundedByTheCallersDeadline freezes PostgreSQL (it
// accepts connections but answers nothing, like a hung host) under a
// server: a write returns by the caller's deadline, agents keep syncing and
// minting from memory, the first use of a renewed agent SVID is served after
// the bounded promotion attempt, and once the database answers again writes
// succeed without a restart.
func TestDatastoreHangIsBoundedByTheCallersDeadline(t *testing.T) {
	pg := testkit.StartPostgres(t)
	h := startServer(t, func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", pg.DSN(), 100*time.Millisecond
	})
	agent := h.newAgent()
	entry := func(name string) *types.Entry {
		return &types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/hang/" + name), Selectors: []*types.Selector{sel("unix", "uid:"+name)}}
	}
	pre := h.createEntry(entry("pre"))
	key := newKey(t)
	renewResp := must(agentv1.NewAgentClient(h.dial(agent)).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)}}))(t)
	renewed := svidFrom(t, renewResp.Svid, key)

	pg.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			pg.Resume(t)
		}
	}()

	deadline := 2 * time.Second
	wctx, cancel := context.WithTimeout(ctxT(t), deadline)
	start := time.Now()
	res, err := entryv1.NewEntryClient(h.admin).BatchCreateEntry(wctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{entry("during")}})
	cancel()
	took := time.Since(start)
	switch {
	case err != nil && (status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Unavailable):
	case err == nil && codes.Code(res.Results[0].Status.Code) == codes.Unavailable:
	default:
		t.Errorf("BatchCreateEntry with the database hung = %v, %v; want DeadlineExceeded or Unavailable", res, err)
	}
	t.Logf("BatchCreateEntry with the database hung and a %v deadline returned after %v: %v", deadline, took.Round(time.Millisecond), err)

	start = time.Now()
	for i := range 20 {
		s := agent
		if i == 0 {
			s = renewed // first use: the promotion write is tried, bounded, then deferred
		}
		resp, err := entryv1.NewEntryClient(h.dial(s)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		if err != nil || len(resp.Entries) != 1 || resp.Entries[0].Id != pre {
			t.Fatalf("sync %d with the database hung = %v, %v; want entry %s", i, resp, err, pre)
		}
		if _, err := h.workloadSVID(s, pre); err != nil {
			t.Fatalf("X509-SVID %d with the database hung: %v", i, err)
		}
	}
	t.Logf("20 syncs and X509-SVIDs with the database hung took %v (the first with a renewed agent SVID)", time.Since(start).Round(time.Millisecond))

	pg.Resume(t)
	resumed = true
	testkit.Poll(t, 30*time.Second, "entry create once the database answers again", func() error {
		res, err := entryv1.NewEntryClient(h.admin).BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{entry("after")}})
		if err != nil {
			return err
		}
		if st := res.Results[0].Status; st.Code != 0 {
			return fmt.Errorf("status %v %q", codes.Code(st.Code), st.Message)
		}
		return nil
	})
}
