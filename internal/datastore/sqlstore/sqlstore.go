// Package sqlstore is the SQL core shared by the sqlite and postgres
// datastore backends: the schema and its migrations, and every query behind
// datastore.Store, written once over database/sql. A backend supplies the
// connections and a Dialect describing how its database differs.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/arborid/arbor/internal/datastore"
)

// ErrSchemaTooNew is returned (wrapped) when the database was migrated by a
// newer arbor than this one: its schema version is above SchemaVersion.
var ErrSchemaTooNew = errors.New("datastore: database schema is newer than this arbor supports")

// Dialect says how one database differs from the SQL this package writes.
// Queries are written with ? placeholders, which Dollar rewrites to $1, $2...
type Dialect struct {
	// Name prefixes every error ("sqlite", "postgres").
	Name string
	// AutoID is the column definition of an auto-incrementing, never reused
	// integer primary key (the event tables' id).
	AutoID string
	// Dollar rewrites ? placeholders to $n.
	Dollar bool
	// Unnest says the database expands array parameters into rows with
	// unnest (PostgreSQL): a batch of new entries is then inserted with one
	// array parameter per column instead of one parameter per value, which
	// the driver encodes, and the database parses and plans, far more
	// cheaply than thousands of placeholders.
	Unnest bool
	// IsUniqueViolation reports whether err is a unique or primary key
	// constraint violation.
	IsUniqueViolation func(error) bool
	// Lock, when not nil, returns a statement that takes an exclusive lock
	// named key, held until the transaction ends. It is nil for databases
	// whose write transactions already exclude each other (sqlite's single
	// writer connection with BEGIN IMMEDIATE).
	Lock func(key string) (query string, args []any)
	// ForUpdate is appended to a SELECT of a row about to be rewritten
	// ("FOR UPDATE"), or empty.
	ForUpdate string
	// ReadTx are the options of the read transactions that give several
	// queries one snapshot (ListEntries reads entries and selectors).
	ReadTx *sql.TxOptions
	// IsUnavailable, when not nil, reports whether err means the database
	// could not be reached or dropped the session (not that it refused the
	// statement); such errors are returned wrapping
	// datastore.ErrUnavailable as well as the cause.
	IsUnavailable func(error) bool
}

// Config holds what a backend passes through from its options.
type Config struct {
	// Now returns the current time for CreatedAt and event timestamps. If nil,
	// time.Now is used.
	Now func() time.Time
}

// Store implements datastore.Store over database/sql. Backends embed it.
type Store struct {
	d      Dialect
	reader *sql.DB
	writer *sql.DB
	now    func() time.Time
}

var _ datastore.Store = (*Store)(nil)

// New migrates the database to SchemaVersion and returns a Store that runs
// reads on reader and write transactions on writer (the same pool for
// databases that need no single writer). Close closes both.
func New(ctx context.Context, d Dialect, reader, writer *sql.DB, cfg Config) (*Store, error) {
	s := &Store{d: d, reader: reader, writer: writer, now: cfg.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the connection pools.
func (s *Store) Close() error {
	err := s.writer.Close()
	if s.reader != s.writer {
		err = errors.Join(err, s.reader.Close())
	}
	if err != nil {
		return fmt.Errorf("%s: close: %w", s.d.Name, err)
	}
	return nil
}

// SchemaVersion reports the schema version recorded in the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.reader.QueryRowContext(ctx, s.q(`SELECT version FROM schema_version WHERE id = 1`)).Scan(&v)
	if err != nil {
		return 0, s.errorf(err, "read schema version")
	}
	return v, nil
}

// q rewrites placeholders for the dialect.
func (s *Store) q(query string) string {
	if !s.d.Dollar || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// errorf wraps err with the dialect's prefix and what failed. Sentinels stay
// reachable through errors.Is; a lost or refused connection also matches
// datastore.ErrUnavailable. Every exported method returns its errors through
// here, so that is the one place the mapping is made.
func (s *Store) errorf(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if s.d.IsUnavailable != nil && !errors.Is(err, datastore.ErrUnavailable) && s.d.IsUnavailable(err) {
		return fmt.Errorf("%s: %s: %w: %w", s.d.Name, what, datastore.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %s: %w", s.d.Name, what, err)
}

// Lock keys. Every transaction that appends to an event table takes that
// table's lock first, so that event IDs commit in increasing order: a poller
// that has seen ID n never later finds a committed event below n.
const (
	lockEntryEvents = "entry_events"
	lockNodeEvents  = "node_events"
	lockMigrate     = "migrate"
	lockBundle      = "bundle:"
)

// write runs fn in a write transaction that holds the named locks.
func (s *Store) write(ctx context.Context, locks []string, fn func(tx *sql.Tx) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if s.d.Lock != nil {
		for _, key := range locks {
			query, args := s.d.Lock(key)
			if _, err := tx.ExecContext(ctx, query, args...); err != nil {
				return fmt.Errorf("lock %s: %w", key, err)
			}
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// read runs fn in a read transaction, so that its queries see one snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.reader.BeginTx(ctx, s.d.ReadTx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// querier is what *sql.Tx and *sql.DB have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// migrate applies the missing migrations, one transaction each.
func (s *Store) migrate(ctx context.Context) error {
	for {
		done, err := s.migrateStep(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

func (s *Store) migrateStep(ctx context.Context) (done bool, err error) {
	err = s.write(ctx, []string{lockMigrate}, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			version INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var v int
		err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&v)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, 0)`); err != nil {
				return fmt.Errorf("init schema_version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read schema_version: %w", err)
		}
		switch {
		case v > SchemaVersion:
			return fmt.Errorf("%w: database is at version %d, this arbor knows up to %d; run a newer arbor or restore a backup", ErrSchemaTooNew, v, SchemaVersion)
		case v == SchemaVersion:
			done = true
			return nil
		}
		for _, stmt := range migrations[v] {
			stmt = strings.ReplaceAll(stmt, "{{autoid}}", s.d.AutoID)
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE schema_version SET version = ? WHERE id = 1`), v+1); err != nil {
			return fmt.Errorf("migration %d: record version: %w", v+1, err)
		}
		return nil
	})
	if err != nil {
		return false, s.errorf(err, "migrate schema")
	}
	return done, nil
}
