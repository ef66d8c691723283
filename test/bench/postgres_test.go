package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresDSN creates a fresh schema and returns a DSN using it.
func postgresDSN(b *testing.B) string {
	base := os.Getenv("ARBOR_TEST_POSTGRES_DSN")
	if base == "" {
		base = "postgres://arbor:arbor@127.0.0.1:5432/arbor_test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		b.Fatalf("PostgreSQL is not reachable at %s: %v (start it: pg_ctlcluster 15 main start)", base, err)
	}
	defer conn.Close(ctx)
	buf := make([]byte, 6)
	rand.Read(buf)
	schema := "arbor_bench_" + hex.EncodeToString(buf)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("options", "-csearch_path="+schema)
	u.RawQuery = q.Encode()
	return u.String()
}
