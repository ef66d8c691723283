package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

const entryColumns = `id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, downstream,
	store_svid, hint, dns_names, federates_with, revision_number, created_at, expires_at,
	jwt_svid_include_jti, disable_x509_svid_prefetch`

// maxRowsPerInsert bounds multi-row INSERTs well below SQLite's and
// PostgreSQL's limits on bound parameters.
const maxRowsPerInsert = 500

// dedupeKey identifies an entry's parent ID, SPIFFE ID and selector set: two
// entries with equal keys are duplicates. Each field is length-prefixed so no
// two different inputs encode alike.
func dedupeKey(e *datastore.Entry) string {
	h := sha256.New()
	var n [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(e.ParentID.String())
	field(e.SPIFFEID.String())
	for _, sel := range selector.Sorted(e.Selectors) {
		field(sel.Type)
		field(sel.Value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CreateEntries implements datastore.EntryStore. The whole batch is first
// inserted with a few multi-row INSERTs in one transaction (entries, their
// selectors, their events: a handful of statements however many entries);
// only when that hits a unique constraint (a duplicate, in the batch or
// already stored) is it rolled back and redone entry by entry, each under
// its own savepoint, so a duplicate rolls back only itself. Selectors come
// back sorted and without repeats.
func (s *Store) CreateEntries(ctx context.Context, entries []*datastore.Entry) ([]*datastore.Entry, []error) {
	out := make([]*datastore.Entry, len(entries))
	errs := make([]error, len(entries))
	if len(entries) == 0 {
		return out, errs
	}
	now := s.now().Unix()
	prepared := make([]*datastore.Entry, len(entries))
	var batch []*datastore.Entry
	var err error
	for i, e := range entries {
		if e == nil {
			errs[i] = fmt.Errorf("%s: create entry: nil entry", s.d.Name)
			continue
		}
		ne := cloneEntry(e)
		if ne.ID == "" {
			if ne.ID, err = newEntryID(); err != nil {
				errs[i] = s.errorf(err, "create entry")
				continue
			}
		}
		ne.CreatedAt = now
		ne.RevisionNumber = 0
		prepared[i] = ne
		batch = append(batch, ne)
	}
	err = s.write(ctx, []string{lockEntryEvents}, func(tx *sql.Tx) error {
		return s.insertEntries(ctx, tx, batch, now)
	})
	switch {
	case err == nil:
		for i, ne := range prepared {
			out[i] = ne
		}
		return out, errs
	case !s.d.IsUniqueViolation(err):
		err = s.errorf(err, "create entries")
		for i := range entries {
			out[i], errs[i] = nil, err
		}
		return out, errs
	}
	err = s.write(ctx, []string{lockEntryEvents}, func(tx *sql.Tx) error {
		for i, ne := range prepared {
			if ne == nil {
				continue
			}
			if _, err := tx.ExecContext(ctx, `SAVEPOINT create_entry`); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			err := s.insertEntry(ctx, tx, ne, now)
			if err == nil {
				if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT create_entry`); err != nil {
					return fmt.Errorf("release savepoint: %w", err)
				}
				out[i] = ne
				continue
			}
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT create_entry`); rerr != nil {
				return fmt.Errorf("rollback to savepoint: %w", rerr)
			}
			if !s.d.IsUniqueViolation(err) {
				errs[i] = s.errorf(err, "create entry %q", ne.ID)
				continue
			}
			existing, ferr := s.findDuplicate(ctx, tx, ne)
			if ferr != nil {
				errs[i] = s.errorf(ferr, "create entry %q: find existing entry", ne.ID)
				continue
			}
			out[i] = existing
			errs[i] = s.errorf(datastore.ErrAlreadyExists, "create entry %q", ne.ID)
		}
		return nil
	})
	if err != nil {
		// Nothing was committed: every entry failed.
		err = s.errorf(err, "create entries")
		for i := range entries {
			out[i], errs[i] = nil, err
		}
	}
	return out, errs
}

// newEntryID returns a new entry ID: a version 7 UUID, whose first bits are
// the time, so that IDs created one after the other sort together and the
// primary key indexes of entries and entry_selectors grow at their end
// instead of at a random page each (random version 4 IDs made every insert
// into a large table touch a page of its own).
func newEntryID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new entry ID: %w", err)
	}
	return u.String(), nil
}

// findDuplicate returns the entry that made inserting e violate a unique
// constraint: the one with the same dedupe key, else the one with its ID.
func (s *Store) findDuplicate(ctx context.Context, tx *sql.Tx, e *datastore.Entry) (*datastore.Entry, error) {
	var id string
	err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM entries WHERE dedupe_key = ?`), dedupeKey(e)).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		id = e.ID
	case err != nil:
		return nil, err
	}
	return s.fetchEntry(ctx, tx, id)
}

// insertEntries inserts entries (each prepared as for insertEntry), their
// selectors and one event each with multi-row INSERTs of at most
// maxRowsPerInsert rows. Events are appended in the order of entries.
func (s *Store) insertEntries(ctx context.Context, tx *sql.Tx, entries []*datastore.Entry, now int64) error {
	if s.d.Unnest {
		return s.insertEntriesUnnest(ctx, tx, entries, now)
	}
	for chunk := range slices.Chunk(entries, maxRowsPerInsert) {
		var b strings.Builder
		b.WriteString(`INSERT INTO entries (` + entryColumns + `, dedupe_key) VALUES `)
		args := make([]any, 0, 17*len(chunk))
		for i, e := range chunk {
			dns, fed, err := encodeEntryLists(e)
			if err != nil {
				return err
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, e.ID, e.SPIFFEID.String(), e.ParentID.String(), e.X509SVIDTTL, e.JWTSVIDTTL, e.Admin,
				e.Downstream, e.StoreSVID, e.Hint, dns, fed, e.RevisionNumber, e.CreatedAt, e.ExpiresAt,
				e.JWTSVIDIncludeJTI, e.DisableX509SVIDPrefetch, dedupeKey(e))
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return fmt.Errorf("insert entries: %w", err)
		}
	}
	type ownedSelector struct {
		owner string
		sel   selector.Selector
	}
	var sels []ownedSelector
	for _, e := range entries {
		for _, sel := range e.Selectors {
			sels = append(sels, ownedSelector{e.ID, sel})
		}
	}
	for chunk := range slices.Chunk(sels, maxRowsPerInsert) {
		var b strings.Builder
		b.WriteString(`INSERT INTO entry_selectors (entry_id, type, value) VALUES `)
		args := make([]any, 0, 3*len(chunk))
		for i, o := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
			args = append(args, o.owner, o.sel.Type, o.sel.Value)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return fmt.Errorf("insert selectors: %w", err)
		}
	}
	for chunk := range slices.Chunk(entries, maxRowsPerInsert) {
		var b strings.Builder
		b.WriteString(`INSERT INTO entry_events (entry_id, created_at) VALUES `)
		args := make([]any, 0, 2*len(chunk))
		for i, e := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?)")
			args = append(args, e.ID, now)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
	}
	return nil
}

// insertEntriesUnnest is insertEntries for a database that expands arrays
// (Dialect.Unnest): each statement passes every column of a chunk of rows
// as one array, and each chunk's events reuse its array of IDs.
func (s *Store) insertEntriesUnnest(ctx context.Context, tx *sql.Tx, entries []*datastore.Entry, now int64) error {
	for chunk := range slices.Chunk(entries, maxRowsPerInsert) {
		n := len(chunk)
		var (
			ids, spiffeIDs, parentIDs, hints, dnss, feds, dedupes = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
			x509TTLs, jwtTTLs                                     = make([]int32, n), make([]int32, n)
			admins, downstreams, storeSVIDs, jtis, noPrefetches   = make([]bool, n), make([]bool, n), make([]bool, n), make([]bool, n), make([]bool, n)
			revisions, createdAts, expiresAts                     = make([]int64, n), make([]int64, n), make([]int64, n)
		)
		for i, e := range chunk {
			dns, fed, err := encodeEntryLists(e)
			if err != nil {
				return err
			}
			ids[i], spiffeIDs[i], parentIDs[i], hints[i], dnss[i], feds[i], dedupes[i] = e.ID, e.SPIFFEID.String(), e.ParentID.String(), e.Hint, dns, fed, dedupeKey(e)
			x509TTLs[i], jwtTTLs[i] = e.X509SVIDTTL, e.JWTSVIDTTL
			admins[i], downstreams[i], storeSVIDs[i], jtis[i], noPrefetches[i] = e.Admin, e.Downstream, e.StoreSVID, e.JWTSVIDIncludeJTI, e.DisableX509SVIDPrefetch
			revisions[i], createdAts[i], expiresAts[i] = e.RevisionNumber, e.CreatedAt, e.ExpiresAt
		}
		// The arrays follow entryColumns, then dedupe_key.
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO entries (`+entryColumns+`, dedupe_key)
			SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::integer[], ?::integer[], ?::boolean[], ?::boolean[],
				?::boolean[], ?::text[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::bigint[],
				?::boolean[], ?::boolean[], ?::text[])`),
			ids, spiffeIDs, parentIDs, x509TTLs, jwtTTLs, admins, downstreams,
			storeSVIDs, hints, dnss, feds, revisions, createdAts, expiresAts,
			jtis, noPrefetches, dedupes)
		if err != nil {
			return fmt.Errorf("insert entries: %w", err)
		}
		// WITH ORDINALITY and ORDER BY: the events get their IDs in the
		// order of the entries, as the row-per-placeholder form gives them.
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO entry_events (entry_id, created_at)
			SELECT u.id, ?::bigint FROM unnest(?::text[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n`), now, ids)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
	}
	var owners, types, values []string
	for _, e := range entries {
		for _, sel := range e.Selectors {
			owners, types, values = append(owners, e.ID), append(types, sel.Type), append(values, sel.Value)
		}
	}
	for start := 0; start < len(owners); start += maxRowsPerInsert {
		end := min(start+maxRowsPerInsert, len(owners))
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO entry_selectors (entry_id, type, value)
			SELECT * FROM unnest(?::text[], ?::text[], ?::text[])`), owners[start:end], types[start:end], values[start:end])
		if err != nil {
			return fmt.Errorf("insert selectors: %w", err)
		}
	}
	return nil
}

func (s *Store) insertEntry(ctx context.Context, tx *sql.Tx, e *datastore.Entry, now int64) error {
	dns, fed, err := encodeEntryLists(e)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO entries (`+entryColumns+`, dedupe_key)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		e.ID, e.SPIFFEID.String(), e.ParentID.String(), e.X509SVIDTTL, e.JWTSVIDTTL, e.Admin, e.Downstream,
		e.StoreSVID, e.Hint, dns, fed, e.RevisionNumber, e.CreatedAt, e.ExpiresAt,
		e.JWTSVIDIncludeJTI, e.DisableX509SVIDPrefetch, dedupeKey(e))
	if err != nil {
		return err
	}
	if err := s.insertSelectors(ctx, tx, "entry_selectors", "entry_id", e.ID, e.Selectors); err != nil {
		return err
	}
	return s.insertEvent(ctx, tx, "entry_events", "entry_id", e.ID, now)
}

// insertSelectors inserts sels (already sorted and unique) for owner.
func (s *Store) insertSelectors(ctx context.Context, tx *sql.Tx, table, ownerColumn, owner string, sels []selector.Selector) error {
	for chunk := range slices.Chunk(sels, maxRowsPerInsert) {
		var b strings.Builder
		b.WriteString(`INSERT INTO ` + table + ` (` + ownerColumn + `, type, value) VALUES `)
		args := make([]any, 0, 3*len(chunk))
		for i, sel := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
			args = append(args, owner, sel.Type, sel.Value)
		}
		if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
			return fmt.Errorf("insert selectors: %w", err)
		}
	}
	return nil
}

func (s *Store) insertEvent(ctx context.Context, tx *sql.Tx, table, keyColumn, key string, now int64) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO `+table+` (`+keyColumn+`, created_at) VALUES (?, ?)`), key, now)
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return nil
}

// UpdateEntry implements datastore.EntryStore: the entry is read, changed
// by fn and written in one transaction holding the entry events lock, so no
// other writer (on any server sharing the database) comes in between.
// CreatedAt is kept and RevisionNumber incremented whatever fn returns.
func (s *Store) UpdateEntry(ctx context.Context, id string, fn func(cur *datastore.Entry) (*datastore.Entry, error)) (*datastore.Entry, error) {
	now := s.now().Unix()
	var ne *datastore.Entry
	err := s.write(ctx, []string{lockEntryEvents}, func(tx *sql.Tx) error {
		cur, err := s.fetchEntry(ctx, tx, id)
		if err != nil {
			return err
		}
		next, err := fn(cloneEntry(cur))
		if err != nil {
			return err
		}
		ne = cloneEntry(next)
		ne.ID = id
		dns, fed, err := encodeEntryLists(ne)
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, s.q(`UPDATE entries SET spiffe_id = ?, parent_id = ?, x509_svid_ttl = ?,
			jwt_svid_ttl = ?, admin = ?, downstream = ?, store_svid = ?, hint = ?, dns_names = ?,
			federates_with = ?, revision_number = revision_number + 1, expires_at = ?,
			jwt_svid_include_jti = ?, disable_x509_svid_prefetch = ?, dedupe_key = ?
			WHERE id = ? RETURNING revision_number, created_at`),
			ne.SPIFFEID.String(), ne.ParentID.String(), ne.X509SVIDTTL, ne.JWTSVIDTTL, ne.Admin, ne.Downstream,
			ne.StoreSVID, ne.Hint, dns, fed, ne.ExpiresAt, ne.JWTSVIDIncludeJTI, ne.DisableX509SVIDPrefetch,
			dedupeKey(ne), id).Scan(&ne.RevisionNumber, &ne.CreatedAt)
		switch {
		case err != nil && s.d.IsUniqueViolation(err):
			return datastore.ErrAlreadyExists
		case err != nil:
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM entry_selectors WHERE entry_id = ?`), id); err != nil {
			return fmt.Errorf("delete selectors: %w", err)
		}
		if err := s.insertSelectors(ctx, tx, "entry_selectors", "entry_id", id, ne.Selectors); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, "entry_events", "entry_id", id, now)
	})
	if err != nil {
		return nil, s.errorf(err, "update entry %q", id)
	}
	return ne, nil
}

// DeleteEntry implements datastore.EntryStore.
func (s *Store) DeleteEntry(ctx context.Context, id string) (*datastore.Entry, error) {
	var e *datastore.Entry
	now := s.now().Unix()
	err := s.write(ctx, []string{lockEntryEvents}, func(tx *sql.Tx) error {
		var err error
		if e, err = s.fetchEntry(ctx, tx, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM entries WHERE id = ?`), id); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, "entry_events", "entry_id", id, now)
	})
	if err != nil {
		return nil, s.errorf(err, "delete entry %q", id)
	}
	return e, nil
}

// FetchEntry implements datastore.EntryStore.
func (s *Store) FetchEntry(ctx context.Context, id string) (*datastore.Entry, error) {
	var e *datastore.Entry
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		e, err = s.fetchEntry(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, s.errorf(err, "fetch entry %q", id)
	}
	return e, nil
}

func (s *Store) fetchEntry(ctx context.Context, q querier, id string) (*datastore.Entry, error) {
	rows, err := q.QueryContext(ctx, s.q(`SELECT `+entryColumns+` FROM entries WHERE id = ?`), id)
	if err != nil {
		return nil, err
	}
	entries, err := scanEntries(rows, 1)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, datastore.ErrNotFound
	}
	e := entries[0]
	if e.Selectors, err = s.selectorsOf(ctx, q, `SELECT type, value FROM entry_selectors WHERE entry_id = ?`, id); err != nil {
		return nil, err
	}
	return e, nil
}

// selectorsOf runs a one-record selector query and returns the selectors sorted.
func (s *Store) selectorsOf(ctx context.Context, q querier, query, id string) ([]selector.Selector, error) {
	rows, err := q.QueryContext(ctx, s.q(query), id)
	if err != nil {
		return nil, fmt.Errorf("query selectors: %w", err)
	}
	defer rows.Close()
	var sels []selector.Selector
	for rows.Next() {
		var sel selector.Selector
		if err := rows.Scan(&sel.Type, &sel.Value); err != nil {
			return nil, fmt.Errorf("scan selector: %w", err)
		}
		sels = append(sels, sel)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query selectors: %w", err)
	}
	slices.SortFunc(sels, selector.Compare)
	return sels, nil
}

// ListEntries implements datastore.EntryStore with two queries, entries and
// then all selectors, joined in memory, in one read transaction. Both tables
// are read in storage order (a scan, not a lookup per row through the ID
// index) and the entries sorted by ID here.
func (s *Store) ListEntries(ctx context.Context) ([]*datastore.Entry, error) {
	var entries []*datastore.Entry
	err := s.read(ctx, func(tx *sql.Tx) error {
		var count int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM entries`).Scan(&count); err != nil {
			return fmt.Errorf("count entries: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+entryColumns+` FROM entries`)
		if err != nil {
			return err
		}
		if entries, err = scanEntries(rows, int(count)); err != nil {
			return err
		}
		byID := make(map[string]*datastore.Entry, len(entries))
		for _, e := range entries {
			byID[e.ID] = e
		}
		rows, err = tx.QueryContext(ctx, `SELECT entry_id, type, value FROM entry_selectors`)
		if err != nil {
			return fmt.Errorf("query selectors: %w", err)
		}
		defer rows.Close()
		// The entry ID is only a key to look up and the type one of a few
		// words: neither is allocated per row.
		var id, typ sql.RawBytes
		types := map[string]string{}
		for rows.Next() {
			var value string
			if err := rows.Scan(&id, &typ, &value); err != nil {
				return fmt.Errorf("scan selector: %w", err)
			}
			e := byID[string(id)]
			if e == nil {
				continue
			}
			t, ok := types[string(typ)]
			if !ok {
				t = string(typ)
				types[t] = t
			}
			e.Selectors = append(e.Selectors, selector.Selector{Type: t, Value: value})
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("query selectors: %w", err)
		}
		for _, e := range entries {
			if len(e.Selectors) > 1 {
				slices.SortFunc(e.Selectors, selector.Compare)
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.errorf(err, "list entries")
	}
	slices.SortFunc(entries, func(a, b *datastore.Entry) int { return strings.Compare(a.ID, b.ID) })
	return entries, nil
}

// scanEntries reads and closes rows of entryColumns.
// sizeHint, when known, is how many rows to expect.
func scanEntries(rows *sql.Rows, sizeHint int) ([]*datastore.Entry, error) {
	defer rows.Close()
	out := make([]*datastore.Entry, 0, sizeHint)
	ids := newIDCache()
	var spiffeID, parentID, dns, fed string
	for rows.Next() {
		e := new(datastore.Entry)
		err := rows.Scan(&e.ID, &spiffeID, &parentID, &e.X509SVIDTTL, &e.JWTSVIDTTL, &e.Admin, &e.Downstream,
			&e.StoreSVID, &e.Hint, &dns, &fed, &e.RevisionNumber, &e.CreatedAt, &e.ExpiresAt,
			&e.JWTSVIDIncludeJTI, &e.DisableX509SVIDPrefetch)
		if err != nil {
			return nil, fmt.Errorf("scan entry: %w", err)
		}
		if e.SPIFFEID, err = ids.parse(spiffeID); err != nil {
			return nil, fmt.Errorf("entry %q: spiffe id: %w", e.ID, err)
		}
		if e.ParentID, err = ids.parse(parentID); err != nil {
			return nil, fmt.Errorf("entry %q: parent id: %w", e.ID, err)
		}
		if err := decodeEntryLists(e, dns, fed); err != nil {
			return nil, fmt.Errorf("entry %q: %w", e.ID, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query entries: %w", err)
	}
	return out, nil
}

// EntryEventsSince implements datastore.EntryStore.
func (s *Store) EntryEventsSince(ctx context.Context, after uint64) ([]datastore.Event, error) {
	events, err := s.eventsSince(ctx, "entry_events", "entry_id", after)
	if err != nil {
		return nil, s.errorf(err, "list entry events")
	}
	return events, nil
}

// LastEntryEventID returns the highest entry event ID (0 if none). A server
// reads it before ListEntries and then polls EntryEventsSince from it.
func (s *Store) LastEntryEventID(ctx context.Context) (uint64, error) {
	id, err := s.lastEventID(ctx, "entry_events")
	if err != nil {
		return 0, s.errorf(err, "read last entry event")
	}
	return id, nil
}

func (s *Store) eventsSince(ctx context.Context, table, keyColumn string, after uint64) ([]datastore.Event, error) {
	if after > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT id, `+keyColumn+` FROM `+table+` WHERE id > ? ORDER BY id`), int64(after))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []datastore.Event
	for rows.Next() {
		var id int64
		var key string
		if err := rows.Scan(&id, &key); err != nil {
			return nil, err
		}
		events = append(events, datastore.Event{ID: uint64(id), Key: key})
	}
	return events, rows.Err()
}

func (s *Store) lastEventID(ctx context.Context, table string) (uint64, error) {
	var id int64
	if err := s.reader.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM `+table).Scan(&id); err != nil {
		return 0, err
	}
	return uint64(id), nil
}

// idCache parses repeated SPIFFE ID strings once (parents repeat a lot).
type idCache map[string]spiffeid.ID

func newIDCache() idCache { return make(idCache) }

func (c idCache) parse(s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, nil
	}
	if id, ok := c[s]; ok {
		return id, nil
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if len(c) < 1<<16 {
		c[s] = id
	}
	return id, nil
}

// cloneEntry copies e so the caller's value is never modified or retained,
// and normalizes its selectors (sorted, no repeats).
func cloneEntry(e *datastore.Entry) *datastore.Entry {
	ne := *e
	if len(e.Selectors) > 0 {
		ne.Selectors = selector.Sorted(e.Selectors)
	} else {
		ne.Selectors = nil
	}
	ne.FederatesWith = slices.Clone(e.FederatesWith)
	ne.DNSNames = slices.Clone(e.DNSNames)
	return &ne
}

func encodeEntryLists(e *datastore.Entry) (dns, fed string, err error) {
	if len(e.DNSNames) > 0 {
		b, err := json.Marshal(e.DNSNames)
		if err != nil {
			return "", "", fmt.Errorf("encode dns names: %w", err)
		}
		dns = string(b)
	}
	if len(e.FederatesWith) > 0 {
		tds := make([]string, len(e.FederatesWith))
		for i, td := range e.FederatesWith {
			tds[i] = td.Name()
		}
		b, err := json.Marshal(tds)
		if err != nil {
			return "", "", fmt.Errorf("encode federates_with: %w", err)
		}
		fed = string(b)
	}
	return dns, fed, nil
}

func decodeEntryLists(e *datastore.Entry, dns, fed string) error {
	if dns != "" {
		if err := json.Unmarshal([]byte(dns), &e.DNSNames); err != nil {
			return fmt.Errorf("decode dns names: %w", err)
		}
	}
	if fed != "" {
		var tds []string
		if err := json.Unmarshal([]byte(fed), &tds); err != nil {
			return fmt.Errorf("decode federates_with: %w", err)
		}
		e.FederatesWith = make([]spiffeid.TrustDomain, len(tds))
		for i, name := range tds {
			td, err := spiffeid.TrustDomainFromString(name)
			if err != nil {
				return fmt.Errorf("decode federates_with: %w", err)
			}
			e.FederatesWith[i] = td
		}
	}
	return nil
}
