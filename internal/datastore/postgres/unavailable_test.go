package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/testkit"
)

func testEntry(path string) *datastore.Entry {
	return &datastore.Entry{
		SPIFFEID:  spiffeid.RequireFromString("spiffe://example.org/" + path),
		ParentID:  spiffeid.RequireFromString("spiffe://example.org/spire/agent/x"),
		Selectors: []selector.Selector{{Type: "unix", Value: "uid:1000"}},
	}
}

// TestKilledConnectionIsUnavailable ends the session of a write transaction
// while it is open (pg_terminate_backend, SQLSTATE 57P01 as in a server
// shutdown) and expects ErrUnavailable, with the cause kept, and nothing
// written; the pool then recovers on its own.
func TestKilledConnectionIsUnavailable(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ctx := testkit.Context(t, time.Minute)
	s := open(t, pg.DSN())
	created, errs := s.CreateEntries(ctx, []*datastore.Entry{testEntry("kept")})
	if errs[0] != nil {
		t.Fatalf("CreateEntries() error = %v", errs[0])
	}
	id := created[0].ID

	admin, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	_, err = s.UpdateEntry(ctx, id, func(cur *datastore.Entry) (*datastore.Entry, error) {
		// Inside the transaction: end every other session, this one's included.
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`); err != nil {
			return nil, err
		}
		cur.Hint = "written by a killed session"
		return cur, nil
	})
	if !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("UpdateEntry() on a killed session: error = %v, want ErrUnavailable", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
		t.Errorf("UpdateEntry() error %q does not keep its cause (SQLSTATE 57P01)", err)
	}

	got, err := s.FetchEntry(ctx, id)
	if err != nil {
		t.Fatalf("FetchEntry() after the killed session: %v (the pool did not recover)", err)
	}
	if got.Hint != "" || got.RevisionNumber != 0 {
		t.Errorf("entry after a killed update = hint %q revision %d, want it unchanged", got.Hint, got.RevisionNumber)
	}
	// A refusal of the statement is not an outage.
	if _, err := s.FetchEntry(ctx, "no-such-entry"); !errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrUnavailable) {
		t.Errorf("FetchEntry(missing) error = %v, want ErrNotFound and not ErrUnavailable", err)
	}
	if _, errs := s.CreateEntries(ctx, []*datastore.Entry{testEntry("kept")}); !errors.Is(errs[0], datastore.ErrAlreadyExists) || errors.Is(errs[0], datastore.ErrUnavailable) {
		t.Errorf("CreateEntries(duplicate) error = %v, want ErrAlreadyExists and not ErrUnavailable", errs[0])
	}
}

// TestStoppedDatabaseIsUnavailable stops the cluster under an open store:
// every kind of call fails with ErrUnavailable within its deadline, and after
// Start the same store (no reopening) reads and writes again, with what was
// committed before the outage still there.
func TestStoppedDatabaseIsUnavailable(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ctx := testkit.Context(t, 2*time.Minute)
	s := open(t, pg.DSN())
	created, errs := s.CreateEntries(ctx, []*datastore.Entry{testEntry("before")})
	if errs[0] != nil {
		t.Fatalf("CreateEntries() error = %v", errs[0])
	}
	node := spiffeid.RequireFromString("spiffe://example.org/spire/agent/join_token/t1")
	if err := s.CreateNode(ctx, &datastore.Node{ID: node, AttestationType: "join_token", CertSerial: "1", CertNotAfter: time.Now().Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}

	pg.Stop(t)
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"ListEntries", func(ctx context.Context) error { _, err := s.ListEntries(ctx); return err }},
		{"FetchEntry", func(ctx context.Context) error { _, err := s.FetchEntry(ctx, created[0].ID); return err }},
		{"CreateEntries", func(ctx context.Context) error {
			_, errs := s.CreateEntries(ctx, []*datastore.Entry{testEntry("during")})
			return errs[0]
		}},
		{"DeleteEntry", func(ctx context.Context) error { _, err := s.DeleteEntry(ctx, created[0].ID); return err }},
		{"EntryEventsSince", func(ctx context.Context) error { _, err := s.EntryEventsSince(ctx, 0); return err }},
		{"NodeEventsSince", func(ctx context.Context) error { _, err := s.NodeEventsSince(ctx, 0); return err }},
		{"LastEntryEventID", func(ctx context.Context) error { _, err := s.LastEntryEventID(ctx); return err }},
		{"FetchNode", func(ctx context.Context) error { _, err := s.FetchNode(ctx, node); return err }},
		{"BanNode", func(ctx context.Context) error { _, err := s.BanNode(ctx, node); return err }},
		{"FetchBundle", func(ctx context.Context) error {
			_, err := s.FetchBundle(ctx, spiffeid.RequireTrustDomainFromString("example.org"))
			return err
		}},
	}
	for _, c := range calls {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		err := c.call(cctx)
		cancel()
		if !errors.Is(err, datastore.ErrUnavailable) {
			t.Errorf("%s() with the database stopped: error = %v, want ErrUnavailable", c.name, err)
		}
		t.Logf("%s() with the database stopped answered in %v: %v", c.name, time.Since(start).Round(time.Millisecond), err)
	}

	pg.Start(t)
	testkit.Poll(t, 30*time.Second, "store usable after restart", func() error {
		_, err := s.ListEntries(ctx)
		return err
	})
	entries, err := s.ListEntries(ctx)
	if err != nil || len(entries) != 1 || entries[0].ID != created[0].ID {
		t.Fatalf("ListEntries() after the outage = %d entries, %v; want the one created before", len(entries), err)
	}
	n, err := s.FetchNode(ctx, node)
	if err != nil || n.Banned() {
		t.Fatalf("FetchNode() after the outage = %+v, %v; want the node, not banned (the ban was refused)", n, err)
	}
	if _, errs := s.CreateEntries(ctx, []*datastore.Entry{testEntry("after")}); errs[0] != nil {
		t.Fatalf("CreateEntries() after the outage: %v", errs[0])
	}
}
