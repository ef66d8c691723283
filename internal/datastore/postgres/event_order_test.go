package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/testkit"
)

// TestLateCommitLeavesNoGapBehindThePoller is the property the event poller
// relies on to miss nothing, across an outage too: a poller that has read
// event n never later finds a committed event below n. Server A holds an
// entry write transaction open; server B's write waits for it (the entry
// event lock) instead of committing a higher event ID first, so a poll while
// A is open sees neither, and after A commits it sees A's event, then B's.
func TestLateCommitLeavesNoGapBehindThePoller(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ctx := testkit.Context(t, time.Minute)
	a, b := open(t, pg.DSN()), open(t, pg.DSN())
	created, errs := a.CreateEntries(ctx, []*datastore.Entry{testEntry("slow")})
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	cursor, err := a.LastEntryEventID(ctx)
	if err != nil {
		t.Fatal(err)
	}

	inTx, release := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		_, err := a.UpdateEntry(ctx, created[0].ID, func(cur *datastore.Entry) (*datastore.Entry, error) {
			close(inTx)
			<-release
			cur.Hint = "committed late"
			return cur, nil
		})
		aDone <- err
	}()
	<-inTx
	bDone := make(chan error, 1)
	var bID string
	go func() {
		out, errs := b.CreateEntries(ctx, []*datastore.Entry{testEntry("fast")})
		if errs[0] == nil {
			bID = out[0].ID
		}
		bDone <- errs[0]
	}()
	admin, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	testkit.Poll(t, 30*time.Second, "B's write waiting for A's", func() error {
		var waiting int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting); err != nil {
			return err
		}
		if waiting == 0 {
			return errors.New("no write waiting on an advisory lock")
		}
		return nil
	})
	evs, err := b.EntryEventsSince(ctx, cursor)
	if err != nil || len(evs) != 0 {
		t.Fatalf("EntryEventsSince(%d) while A's write is open = %v, %v; want no events", cursor, evs, err)
	}

	close(release)
	for _, done := range []chan error{aDone, bDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("write: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("writes did not finish")
		}
	}
	evs, err = b.EntryEventsSince(context.Background(), cursor)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Key != created[0].ID || evs[1].Key != bID || evs[0].ID >= evs[1].ID {
		t.Fatalf("EntryEventsSince(%d) after both commits = %+v; want A's event (%s) then B's (%s), IDs increasing", cursor, evs, created[0].ID, bID)
	}
}
