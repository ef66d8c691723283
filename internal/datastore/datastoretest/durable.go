package datastoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/internal/datastore"
)

// Database is one empty database that stores can be opened on repeatedly, as
// a restarted server or several servers sharing it would.
type Database struct {
	// Open opens a store (with Clock) on the database; every call opens the
	// same database. The caller closes the store.
	Open func(ctx context.Context) (datastore.Store, error)
	// SchemaVersion reads the schema version recorded in the database.
	SchemaVersion func(ctx context.Context) (int, error)
	// SetSchemaVersion overwrites the recorded schema version.
	SetSchemaVersion func(ctx context.Context, v int) error
	// CodeVersion is the schema version the code migrates to.
	CodeVersion int
	// ErrTooNew is what Open returns (errors.Is) for a database whose schema
	// version is above CodeVersion.
	ErrTooNew error
	// Shared reports whether several stores may be open on the database at
	// once and coordinate (PostgreSQL, and SQLite files across connections).
	Shared bool
}

// RunDurable runs the tests that need to reopen or share a database. newDB
// returns a new, empty Database each call.
func RunDurable(t *testing.T, newDB func(t *testing.T) Database) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db Database)
	}{
		{"ReopenKeepsEverything", testReopen},
		{"MigrationsIdempotent", testMigrationsIdempotent},
		{"NewerSchemaRefused", testNewerSchemaRefused},
		{"SharedDatabase", testSharedDatabase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newDB(t))
		})
	}
}

func mustOpen(t *testing.T, ctx context.Context, db Database) datastore.Store {
	t.Helper()
	s, err := db.Open(ctx)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// snapshot is everything a store holds, for comparing before and after.
type snapshot struct {
	Entries      []*datastore.Entry
	Nodes        []*datastore.Node
	Bundles      []*datastore.Bundle
	EntryEvents  []datastore.Event
	NodeEvents   []datastore.Event
	TokenPresent bool
}

func takeSnapshot(t *testing.T, ctx context.Context, s datastore.Store, checkToken bool) snapshot {
	t.Helper()
	var snap snapshot
	var err error
	if snap.Entries, err = s.ListEntries(ctx); err != nil {
		t.Fatalf("ListEntries() error = %v", err)
	}
	sortEntries(snap.Entries)
	if snap.Nodes, err = s.ListNodes(ctx); err != nil {
		t.Fatalf("ListNodes() error = %v", err)
	}
	if snap.Bundles, err = s.ListBundles(ctx); err != nil {
		t.Fatalf("ListBundles() error = %v", err)
	}
	if snap.EntryEvents, err = s.EntryEventsSince(ctx, 0); err != nil {
		t.Fatalf("EntryEventsSince() error = %v", err)
	}
	if snap.NodeEvents, err = s.NodeEventsSince(ctx, 0); err != nil {
		t.Fatalf("NodeEventsSince() error = %v", err)
	}
	if checkToken {
		_, err := s.FetchJoinToken(ctx, "durable-token")
		snap.TokenPresent = err == nil
	}
	return snap
}

func testReopen(t *testing.T, db Database) {
	ctx := testContext(t)
	s, err := db.Open(ctx)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	entries := []*datastore.Entry{fullEntry("/a"), fullEntry("/b")}
	entries[1].Selectors = sels("unix:uid:1")
	if _, errs := s.CreateEntries(ctx, entries); errors.Join(errs...) != nil {
		t.Fatalf("CreateEntries() error = %v", errors.Join(errs...))
	}
	node := &datastore.Node{ID: id("/agent/1"), CertSerial: "1", Selectors: sels("a:1", "b:2")}
	if err := s.CreateNode(ctx, node); err != nil {
		t.Fatalf("CreateNode() error = %v", err)
	}
	if err := s.CreateJoinToken(ctx, &datastore.JoinToken{Token: "durable-token", ExpiresAt: time.Unix(FixedNow+60, 0)}); err != nil {
		t.Fatalf("CreateJoinToken() error = %v", err)
	}
	if _, err := s.UpdateBundle(ctx, td, func(*datastore.Bundle) (*datastore.Bundle, error) { return testBundle(td), nil }); err != nil {
		t.Fatalf("UpdateBundle() error = %v", err)
	}
	before := takeSnapshot(t, ctx, s, false)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}

	s = mustOpen(t, ctx, db)
	after := takeSnapshot(t, ctx, s, true)
	before.TokenPresent = true
	if diff := cmp.Diff(before, after, cmpOpts...); diff != "" {
		t.Errorf("store after reopen (-before +after):\n%s", diff)
	}
	// Event IDs continue after the reopen.
	if _, err := s.DeleteNode(ctx, node.ID); err != nil {
		t.Fatalf("DeleteNode() error = %v", err)
	}
	events, err := s.NodeEventsSince(ctx, 0)
	if err != nil || len(events) != 2 || events[1].ID <= events[0].ID {
		t.Errorf("NodeEventsSince(0) after reopen = %v, %v; want two increasing events", events, err)
	}
}

func testMigrationsIdempotent(t *testing.T, db Database) {
	ctx := testContext(t)
	for i := range 3 {
		s, err := db.Open(ctx)
		if err != nil {
			t.Fatalf("Open() #%d error = %v", i+1, err)
		}
		v, err := db.SchemaVersion(ctx)
		if err != nil || v != db.CodeVersion {
			t.Errorf("schema version after open #%d = %d, %v; want %d", i+1, v, err, db.CodeVersion)
		}
		if _, errs := s.CreateEntries(ctx, []*datastore.Entry{{SPIFFEID: id(fmt.Sprintf("/m%d", i)), ParentID: id("/node")}}); errs[0] != nil {
			t.Errorf("CreateEntries() after open #%d error = %v", i+1, errs[0])
		}
		list, err := s.ListEntries(ctx)
		if err != nil || len(list) != i+1 {
			t.Errorf("ListEntries() after open #%d = %d entries, %v; want %d", i+1, len(list), err, i+1)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close() error = %v", err)
		}
	}
}

func testNewerSchemaRefused(t *testing.T, db Database) {
	ctx := testContext(t)
	s, err := db.Open(ctx)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if err := db.SetSchemaVersion(ctx, db.CodeVersion+1); err != nil {
		t.Fatalf("SetSchemaVersion() error = %v", err)
	}
	s, err = db.Open(ctx)
	if err == nil {
		s.Close()
		t.Fatalf("Open(database at version %d, code at %d) error = nil, want ErrTooNew", db.CodeVersion+1, db.CodeVersion)
	}
	if !errors.Is(err, db.ErrTooNew) {
		t.Errorf("Open(newer schema) error = %v, want %v", err, db.ErrTooNew)
	}
	if v, err := db.SchemaVersion(ctx); err != nil || v != db.CodeVersion+1 {
		t.Errorf("schema version after refused open = %d, %v; want it left at %d", v, err, db.CodeVersion+1)
	}
}

// testSharedDatabase opens two stores on one database, as two servers of a
// tier sharing it, and checks that their writes exclude each other.
func testSharedDatabase(t *testing.T, db Database) {
	if !db.Shared {
		t.Fatalf("the backend does not support sharing a database; RunDurable requires it")
	}
	ctx := testContext(t)
	a := mustOpen(t, ctx, db)
	b := mustOpen(t, ctx, db)

	concurrentAppends(t, []datastore.Store{a, b}, 8)

	// One token, consumed from both stores at once: one winner.
	if err := a.CreateJoinToken(ctx, &datastore.JoinToken{Token: "shared", ExpiresAt: time.Unix(FixedNow+60, 0)}); err != nil {
		t.Fatalf("CreateJoinToken() error = %v", err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]error, 8)
	for i := range results {
		s := []datastore.Store{a, b}[i%2]
		wg.Go(func() {
			<-start
			_, results[i] = consumeJoinToken(ctx, s, "shared")
		})
	}
	close(start)
	wg.Wait()
	winners, losers := 0, 0
	for _, err := range results {
		switch {
		case err == nil:
			winners++
		case errors.Is(err, datastore.ErrNotFound):
			losers++
		}
	}
	if winners != 1 || losers != len(results)-1 {
		t.Errorf("AttestNode with one token from two stores: results %v, want exactly one nil and the rest ErrNotFound", results)
	}

	// Concurrent entry writes from both: each store sees the other's events,
	// in one increasing order, and duplicates are caught across stores.
	const perStore = 20
	errs := make([]error, 2*perStore)
	for i := range errs {
		s := []datastore.Store{a, b}[i%2]
		wg.Go(func() {
			e := &datastore.Entry{ID: fmt.Sprintf("e%02d", i), SPIFFEID: id(fmt.Sprintf("/w%d", i/2)), ParentID: id("/node")}
			_, res := s.CreateEntries(ctx, []*datastore.Entry{e})
			errs[i] = res[0]
		})
	}
	wg.Wait()
	created := 0
	for i, err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, datastore.ErrAlreadyExists):
			t.Errorf("CreateEntries(e%02d) error = %v", i, err)
		}
	}
	if created != perStore {
		t.Errorf("%d entries created from %d pairs of duplicates on two stores, want %d", created, perStore, perStore)
	}
	evA, err := a.EntryEventsSince(ctx, 0)
	if err != nil {
		t.Fatalf("EntryEventsSince() on a error = %v", err)
	}
	evB, err := b.EntryEventsSince(ctx, 0)
	if err != nil {
		t.Fatalf("EntryEventsSince() on b error = %v", err)
	}
	if diff := cmp.Diff(evA, evB); diff != "" {
		t.Errorf("the two stores see different entry events (-a +b):\n%s", diff)
	}
	if len(evA) != perStore {
		t.Errorf("%d entry events, want %d (one per created entry)", len(evA), perStore)
	}
	for i := 1; i < len(evA); i++ {
		if evA[i].ID <= evA[i-1].ID {
			t.Errorf("event IDs not increasing: %d after %d", evA[i].ID, evA[i-1].ID)
		}
	}
}
