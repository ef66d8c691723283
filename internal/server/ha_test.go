package server_test

import (
	"errors"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// TestSharedPostgres runs two servers of one tier on one PostgreSQL schema:
// each keeps its own CA, the bundle holds both, and entries, agents and join
// tokens written through one are served by the other.
func TestSharedPostgres(t *testing.T) {
	dsn := postgresDSN(t)
	pg := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, 100*time.Millisecond
	}
	a := startServer(t, pg)
	b := startServer(t, pg)

	caA, _ := a.srv.CA().X509CA()
	caB, _ := b.srv.CA().X509CA()
	if caA.Equal(caB) {
		t.Fatal("both servers share one CA; each must keep its own")
	}
	// The shared bundle holds both roots; each server picks up the other's.
	waitFor(t, "both roots in both servers' bundles", func() bool {
		return len(a.snapshot().Bundle.X509Authorities) == 2 && len(b.snapshot().Bundle.X509Authorities) == 2
	})
	a.bundle, b.bundle = b.snapshotBundle(), b.snapshotBundle()

	// Attest through A, register through A; the agent syncs and mints through B.
	agent := a.newAgent()
	entryID := a.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/ha"), Selectors: []*types.Selector{sel("unix", "uid:9")}})
	waitFor(t, "server B serving the agent's entry", func() bool {
		resp, err := entryv1.NewEntryClient(b.dial(agent)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		return err == nil && len(resp.Entries) == 1 && resp.Entries[0].Id == entryID
	})
	svid, err := b.workloadSVID(agent, entryID)
	if err != nil {
		t.Fatalf("SVID through server B: %v", err)
	}
	if got := svid.Certificates[len(svid.Certificates)-1].Issuer.String(); got != caB.Subject.String() {
		t.Errorf("SVID from B issued by %s, want B's CA %s", got, caB.Subject)
	}
	// A token made on B is single-use across both.
	tok := b.token(600)
	if _, err := a.attest(tok); err != nil {
		t.Fatalf("attest on A with B's token: %v", err)
	}
	if _, err := b.attest(tok); err == nil {
		t.Fatal("token used on A was accepted again on B")
	}
	// Deleting on B removes the entry from A.
	must(entryv1.NewEntryClient(b.admin).BatchDeleteEntry(ctxT(t), &entryv1.BatchDeleteEntryRequest{Ids: []string{entryID}}))(t)
	waitFor(t, "server A dropping the deleted entry", func() bool {
		resp, err := entryv1.NewEntryClient(a.dial(agent)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		return err == nil && len(resp.Entries) == 0
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Poll(t, 20*time.Second, "waiting for "+what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}
