// Package postgres is the datastore backend for a tier whose servers share one
// PostgreSQL database (pgx/v5 through database/sql). Writers on different
// servers exclude each other with transaction-scoped advisory locks, so event
// IDs commit in order and bundle read-modify-writes never lose an update.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/datastore/sqlstore"
)

// SchemaVersion is the schema version Open migrates a database to.
const SchemaVersion = sqlstore.SchemaVersion

// ErrSchemaTooNew is returned (wrapped) by Open for a database written by a
// newer arbor.
var ErrSchemaTooNew = sqlstore.ErrSchemaTooNew

// Store is a datastore.Store on a PostgreSQL schema. Besides the interface it
// offers SchemaVersion, LastEntryEventID, LastNodeEventID and PruneEvents
// (see sqlstore.Store).
type Store struct {
	*sqlstore.Store
}

var _ datastore.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	now      func() time.Time
	maxConns int
}

// WithNow sets the clock for creation times and events; time.Now if unset.
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithMaxConns bounds the connection pool (default 10).
func WithMaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// lockClass namespaces arbor's advisory locks (the first key of the
// two-int4 form); the second is a hash of the schema and the lock name.
const lockClass = 0x61726272 // "arbr"

// Open connects with dsn (a URL or key=value string as libpq takes; a
// search_path, given as options=-csearch_path=x or search_path=x, selects the
// schema) and migrates the schema to SchemaVersion. It fails with
// ErrSchemaTooNew if the schema was migrated by a newer arbor.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{maxConns: 10}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message quotes the DSN with the password redacted only on a
		// best-effort basis: report the cause alone.
		reason := "malformed connection string"
		if cause := errors.Unwrap(err); cause != nil {
			reason += ": " + cause.Error()
		}
		return nil, errors.New("postgres: parse dsn: " + reason)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(max(o.maxConns, 2))
	db.SetMaxIdleConns(max(o.maxConns, 2))
	db.SetConnMaxIdleTime(5 * time.Minute)

	var schema sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d database %q: %w", cfg.Host, cfg.Port, cfg.Database, err)
	}
	if !schema.Valid {
		db.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d database %q: search_path names no existing schema", cfg.Host, cfg.Port, cfg.Database)
	}

	d := sqlstore.Dialect{
		Name:              "postgres",
		AutoID:            "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		Dollar:            true,
		Unnest:            true,
		IsUniqueViolation: isUniqueViolation,
		Lock: func(key string) (string, []any) {
			h := fnv.New32a()
			h.Write([]byte(schema.String))
			h.Write([]byte{0})
			h.Write([]byte(key))
			return `SELECT pg_advisory_xact_lock($1, $2)`, []any{int32(lockClass), int32(h.Sum32())}
		},
		ForUpdate:     "FOR UPDATE",
		ReadTx:        &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		IsUnavailable: isUnavailable,
	}
	core, err := sqlstore.New(ctx, d, db, db, sqlstore.Config{Now: o.now})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{Store: core}, nil
}

// isUnavailable reports whether err says the database could not be reached
// or ended the session, rather than refused the statement: a failed dial
// (refused, unreachable, authentication or TLS failure: pgx's ConnectError,
// including a dial cut short by the deadline), a network error or end of
// stream on an open connection, a connection that database/sql found broken,
// a deadline that passed before the database answered, and the server-sent
// SQLSTATEs of a server shutting down or starting up (57P01 admin_shutdown,
// 57P02 crash_shutdown, 57P03 cannot_connect_now), of class 08 (connection
// exception) and 53300 (too_many_connections). A cancelled context is the
// caller leaving, not an outage, and is not matched.
func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch code := pgErr.Code; {
		case code == "57P01", code == "57P02", code == "57P03", code == "53300", strings.HasPrefix(code, "08"):
			return true
		}
		// Any other SQLSTATE is the server refusing the statement, unless
		// it came while connecting (for example 28P01, a wrong password).
		var connErr *pgconn.ConnectError
		return errors.As(err, &connErr)
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr),
		errors.As(err, &netErr),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, context.DeadlineExceeded),
		pgconn.Timeout(err):
		return true
	}
	return false
}

func isUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}
