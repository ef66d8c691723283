package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPrivatePostgresStopStart runs a private cluster, writes a row, stops the
// cluster (connections are refused while it is down), starts it again and
// reads the row back on the same DSN; pauses it (a query waits for its
// deadline) and resumes it; kills it and starts it again.
func TestPrivatePostgresStopStart(t *testing.T) {
	pg := StartPostgres(t)
	ctx := Context(t, 2*time.Minute)

	c, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect to %s: %v", pg.DSN(), err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the outage')"); err != nil {
		t.Fatal(err)
	}

	pg.Stop(t)
	if err := c.Ping(ctx); err == nil {
		t.Error("a connection opened before Stop still answers after it")
	}
	c.Close(ctx)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = pgx.Connect(dctx, pg.DSN())
	cancel()
	if err == nil {
		t.Fatal("connect while stopped succeeded")
	}
	pg.Stop(t) // stopping a stopped cluster does nothing

	pg.Start(t)
	c, err = pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect after Start: %v", err)
	}
	defer c.Close(ctx)
	var v string
	if err := c.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "before the outage" {
		t.Fatalf("row after restart = %q, %v; want %q", v, err, "before the outage")
	}

	// Paused, the cluster accepts nothing in time: a query waits for its
	// deadline. Resumed, the same connection answers.
	pg.Pause(t)
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	err = c.QueryRow(qctx, "SELECT v FROM kept").Scan(&v)
	cancel()
	if err == nil {
		t.Fatal("query on a paused cluster answered")
	}
	pg.Resume(t)
	c3, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect after Resume: %v", err)
	}
	c3.Close(ctx)

	pg.Kill(t)
	pg.Start(t)
	c2, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect after Kill and Start: %v", err)
	}
	defer c2.Close(ctx)
	if err := c2.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "before the outage" {
		t.Fatalf("row after crash restart = %q, %v; want %q", v, err, "before the outage")
	}
}
