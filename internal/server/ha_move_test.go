package server_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/server"
)

// TestAgentMovesBeforeThePoll is an agent behind a load balancer: it
// attests on one replica and its next call lands on another whose event
// poller has not run yet (here: not for an hour). The second replica reads
// the node from the datastore instead of answering "not attested" (which
// makes spire-agent drop its SVID and re-attest); the same for a renewed
// SVID, whose first use there supersedes the old one there at once (A,
// which still holds the node as it was, learns it at its next poll, as it
// learns a ban: the bound is one poll interval).
func TestAgentMovesBeforeThePoll(t *testing.T) {
	dsn := postgresDSN(t)
	pg := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, time.Hour
	}
	a := startServer(t, pg)
	b := startServer(t, pg) // B loaded A's root at start; A never learns B's
	a.bundle, b.bundle = b.snapshotBundle(), b.snapshotBundle()

	sync := func(h *harness, s *x509svid.SVID) error {
		_, err := entryv1.NewEntryClient(h.dial(s)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		return err
	}
	agent := a.newAgent()
	if err := sync(b, agent); err != nil {
		t.Fatalf("agent attested on A, first call on B: %v", err)
	}

	key := newKey(t)
	resp := must(agentv1.NewAgentClient(a.dial(agent)).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)}}))(t)
	renewed := svidFrom(t, resp.Svid, key)
	if err := sync(b, renewed); err != nil {
		t.Fatalf("SVID renewed on A, first use on B: %v", err)
	}
	err := sync(b, agent)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("superseded SVID on B: %v, want PermissionDenied", err)
	}
	for _, d := range status.Convert(err).Details() {
		if pd, ok := d.(*types.PermissionDeniedDetails); ok && pd.Reason != types.PermissionDeniedDetails_AGENT_NOT_ACTIVE {
			t.Errorf("superseded SVID on B: reason %v, want AGENT_NOT_ACTIVE", pd.Reason)
		}
	}

	// A ban on A reaches B through the datastore for any serial B has not
	// seen: the read-through never serves what the datastore refuses.
	other := a.newAgent()
	must(agentv1.NewAgentClient(a.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(other.ID.Path())}))(t)
	if err := sync(b, other); status.Code(err) != codes.PermissionDenied {
		t.Errorf("agent banned on A before B knew it, call on B: %v, want PermissionDenied", err)
	}
}

// TestDownstreamAndAdminMoveBeforeThePoll: a child tier's downstream entry
// and an admin entry are created on replica A; their SVIDs' first calls
// land on replica B, whose event poller has not run since. B catches up
// before refusing: the child gets its intermediate and the admin its
// answer, and a plain workload is still refused.
func TestDownstreamAndAdminMoveBeforeThePoll(t *testing.T) {
	dsn := postgresDSN(t)
	pg := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, time.Hour
	}
	a := startServer(t, pg)
	b := startServer(t, pg)
	a.bundle, b.bundle = b.snapshotBundle(), b.snapshotBundle()

	agent := a.newAgent()
	downID := a.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/regional/eu"), Selectors: []*types.Selector{sel("unix", "uid:3")}, Downstream: true})
	adminID := a.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/ops/admin"), Selectors: []*types.Selector{sel("unix", "uid:2")}, Admin: true})
	wlID := a.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/workload"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
	downSVID := must(a.workloadSVID(agent, downID))(t)
	adminSVID := must(a.workloadSVID(agent, adminID))(t)
	workload := must(a.workloadSVID(agent, wlID))(t)

	if _, err := svidv1.NewSVIDClient(b.dial(downSVID)).NewDownstreamX509CA(ctxT(t), &svidv1.NewDownstreamX509CARequest{Csr: csrFor(t, newKey(t))}); err != nil {
		t.Errorf("child tier registered on A, first NewDownstreamX509CA on B: %v", err)
	}
	if _, err := entryv1.NewEntryClient(b.dial(adminSVID)).CountEntries(ctxT(t), &entryv1.CountEntriesRequest{}); err != nil {
		t.Errorf("admin registered on A, first call on B: %v", err)
	}
	if _, err := entryv1.NewEntryClient(b.dial(workload)).CountEntries(ctxT(t), &entryv1.CountEntriesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("plain workload calling an admin method on B: %v, want PermissionDenied", err)
	}
}
