package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/datastore/datastoretest"
	"github.com/arborid/arbor/internal/datastore/postgres"
)

const defaultDSN = "postgres://arbor:arbor@127.0.0.1:5432/arbor_test?sslmode=disable"

func baseDSN() string {
	if dsn := os.Getenv("ARBOR_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return defaultDSN
}

// redacted returns dsn without its password, for messages.
func redacted(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(the key=value DSN in ARBOR_TEST_POSTGRES_DSN)"
}

// adminDB connects to the test database, failing the test with how to start
// PostgreSQL if it is unreachable.
func adminDB(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sql.Open("pgx", baseDSN())
	if err != nil {
		tb.Fatalf("postgres: parse ARBOR_TEST_POSTGRES_DSN: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		tb.Fatalf("postgres at %s is unreachable: %v\n"+
			"These tests need a running PostgreSQL (15 or later). Start one with a role and database for them, e.g.\n"+
			"  sudo apt-get install -y postgresql && sudo service postgresql start\n"+
			"  sudo -u postgres psql -c \"CREATE ROLE arbor LOGIN PASSWORD 'arbor'\" -c \"CREATE DATABASE arbor_test OWNER arbor\"\n"+
			"or point ARBOR_TEST_POSTGRES_DSN at another server (default %s). CI installs and starts it.",
			redacted(baseDSN()), err, defaultDSN)
	}
	return db
}

// newSchema creates a schema with a random name, dropped when the test ends,
// and returns its name.
func newSchema(tb testing.TB) string {
	tb.Helper()
	db := adminDB(tb)
	var b [8]byte
	rand.Read(b[:])
	schema := "arbor_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		tb.Fatalf("create schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// schemaDSN returns the base DSN with search_path set to schema, in the
// libpq "options" form a user would write.
func schemaDSN(tb testing.TB, schema string) string {
	tb.Helper()
	dsn := baseDSN()
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		q := u.Query()
		q.Set("options", "-csearch_path="+schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " options=-csearch_path=" + schema
}

func open(tb testing.TB, dsn string) *postgres.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, postgres.WithNow(datastoretest.Clock))
	if err != nil {
		tb.Fatalf("Open() error = %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close() error = %v", err)
		}
	})
	return s
}

func TestSuite(t *testing.T) {
	datastoretest.Run(t, func(t *testing.T) datastore.Store {
		return open(t, schemaDSN(t, newSchema(t)))
	})
}

func TestDurable(t *testing.T) {
	datastoretest.RunDurable(t, func(t *testing.T) datastoretest.Database {
		schema := newSchema(t)
		dsn := schemaDSN(t, schema)
		admin := adminDB(t)
		return datastoretest.Database{
			Open: func(ctx context.Context) (datastore.Store, error) {
				return postgres.Open(ctx, dsn, postgres.WithNow(datastoretest.Clock))
			},
			SchemaVersion: func(ctx context.Context) (int, error) {
				var v int
				err := admin.QueryRowContext(ctx, `SELECT version FROM `+schema+`.schema_version`).Scan(&v)
				return v, err
			},
			SetSchemaVersion: func(ctx context.Context, v int) error {
				_, err := admin.ExecContext(ctx, `UPDATE `+schema+`.schema_version SET version = $1`, v)
				return err
			},
			CodeVersion: postgres.SchemaVersion,
			ErrTooNew:   postgres.ErrSchemaTooNew,
			Shared:      true,
		}
	})
}

// TestSearchPathForms checks both ways of naming the schema in a DSN, and
// that each store writes only into its own schema.
func TestSearchPathForms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := url.Parse(baseDSN())
	if err != nil || u.Scheme == "" {
		t.Fatalf("this test needs a URL DSN, got %s", redacted(baseDSN()))
	}
	schemaA, schemaB := newSchema(t), newSchema(t)
	q := u.Query()
	q.Set("search_path", schemaB) // a runtime parameter, pgx style
	u.RawQuery = q.Encode()

	a := open(t, schemaDSN(t, schemaA))
	b := open(t, u.String())
	if err := a.CreateJoinToken(ctx, &datastore.JoinToken{Token: "in-a", ExpiresAt: time.Unix(datastoretest.FixedNow, 0)}); err != nil {
		t.Fatalf("CreateJoinToken() error = %v", err)
	}
	if _, err := b.FetchJoinToken(ctx, "in-a"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("FetchJoinToken() on schema %s of a token created in %s: error = %v, want ErrNotFound", schemaB, schemaA, err)
	}
	admin := adminDB(t)
	for schema, want := range map[string]int{schemaA: 1, schemaB: 0} {
		var n int
		if err := admin.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+schema+`.join_tokens`).Scan(&n); err != nil || n != want {
			t.Errorf("%s.join_tokens rows = %d, %v; want %d", schema, n, err, want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adminDB(t) // fail clearly first if PostgreSQL is down
	tests := []struct {
		name    string
		dsn     string
		wantMsg string
	}{
		{"malformed", "postgres://arbor:secret@127.0.0.1:notaport/x", "malformed"},
		{"missing schema", schemaDSN(t, "arbor_no_such_schema"), "no existing schema"},
	}
	for _, tt := range tests {
		s, err := postgres.Open(ctx, tt.dsn)
		if err == nil {
			s.Close()
			t.Errorf("%s: Open() error = nil, want one", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("%s: Open() error = %v, want it to mention %q", tt.name, err, tt.wantMsg)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: Open() error %q leaks the password", tt.name, err)
		}
	}
}

func BenchmarkListEntries10k(b *testing.B) {
	datastoretest.BenchListEntries(b, open(b, schemaDSN(b, newSchema(b))), 10_000)
}

func BenchmarkCreateEntries100(b *testing.B) {
	datastoretest.BenchCreateEntries(b, open(b, schemaDSN(b, newSchema(b))), 100)
}
