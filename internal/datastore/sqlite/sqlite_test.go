package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/datastore/datastoretest"
	"github.com/arborid/arbor/internal/datastore/sqlite"
)

func open(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sqlite.Open(ctx, path, sqlite.WithNow(datastoretest.Clock))
	if err != nil {
		tb.Fatalf("Open(%s) error = %v", path, err)
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
		return open(t, filepath.Join(t.TempDir(), "arbor.db"))
	})
}

// rawExec runs a statement on the file outside the store.
func rawExec(ctx context.Context, path, query string, args ...any) error {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, query, args...)
	return err
}

func TestDurable(t *testing.T) {
	datastoretest.RunDurable(t, func(t *testing.T) datastoretest.Database {
		path := filepath.Join(t.TempDir(), "arbor.db")
		return datastoretest.Database{
			Open: func(ctx context.Context) (datastore.Store, error) {
				return sqlite.Open(ctx, path, sqlite.WithNow(datastoretest.Clock))
			},
			SchemaVersion: func(ctx context.Context) (int, error) {
				db, err := sql.Open("sqlite", path)
				if err != nil {
					return 0, err
				}
				defer db.Close()
				var v int
				err = db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
				return v, err
			},
			SetSchemaVersion: func(ctx context.Context, v int) error {
				return rawExec(ctx, path, `UPDATE schema_version SET version = ?`, v)
			},
			CodeVersion: sqlite.SchemaVersion,
			ErrTooNew:   sqlite.ErrSchemaTooNew,
			Shared:      true,
		}
	})
}

func TestOpenSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "arbor.db")
	s := open(t, path)
	if v, err := s.SchemaVersion(ctx); err != nil || v != sqlite.SchemaVersion {
		t.Errorf("SchemaVersion() = %d, %v; want %d", v, err, sqlite.SchemaVersion)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("database file mode = %v, want 0600 (it holds join tokens)", mode)
	}
	// WAL mode is persistent in the file: a plain connection sees it.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestOpenRejectsBadPaths(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	tests := []string{
		"",
		":memory:",
		"file:x.db",
		filepath.Join(dir, "a?b.db"),
		filepath.Join(dir, "missing-dir", "arbor.db"),
	}
	for _, path := range tests {
		s, err := sqlite.Open(ctx, path)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) error = nil, want an error", path)
		}
	}
}

func TestForeignKeysCascade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "arbor.db")
	s := open(t, path)
	datastoretest.Seed(t, s, 10)
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if _, err := s.DeleteEntry(ctx, e.ID); err != nil {
			t.Fatalf("DeleteEntry() error = %v", err)
		}
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM entry_selectors`).Scan(&n); err != nil || n != 0 {
		t.Errorf("entry_selectors rows after deleting every entry = %d, %v; want 0 (ON DELETE CASCADE)", n, err)
	}
	if _, err := s.FetchEntry(ctx, list[0].ID); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("FetchEntry(deleted) error = %v, want ErrNotFound", err)
	}
}

func BenchmarkListEntries10k(b *testing.B) {
	datastoretest.BenchListEntries(b, open(b, filepath.Join(b.TempDir(), "arbor.db")), 10_000)
}

func BenchmarkCreateEntries100(b *testing.B) {
	datastoretest.BenchCreateEntries(b, open(b, filepath.Join(b.TempDir(), "arbor.db")), 100)
}
