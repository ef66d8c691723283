package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
)

// bundleRecord is the stored JSON form of a datastore.Bundle (the trust
// domain is the row's key). Field names are part of the schema: rename only
// through a migration.
type bundleRecord struct {
	X509Authorities []x509Record `json:"x509_authorities,omitempty"`
	JWTAuthorities  []jwtRecord  `json:"jwt_authorities,omitempty"`
	RefreshHint     int64        `json:"refresh_hint,omitempty"`
	SequenceNumber  uint64       `json:"sequence_number,omitempty"`
	RevokedX509     [][]byte     `json:"revoked_x509,omitempty"`
}

type x509Record struct {
	Cert    []byte `json:"cert"`
	Tainted bool   `json:"tainted,omitempty"`
}

type jwtRecord struct {
	KeyID     string `json:"key_id"`
	PublicKey []byte `json:"public_key"`
	ExpiresAt int64  `json:"expires_at,omitempty"`
	Tainted   bool   `json:"tainted,omitempty"`
}

func encodeBundle(b *datastore.Bundle) (string, error) {
	r := bundleRecord{RefreshHint: b.RefreshHint, SequenceNumber: b.SequenceNumber, RevokedX509: b.RevokedX509}
	for _, a := range b.X509Authorities {
		r.X509Authorities = append(r.X509Authorities, x509Record{Cert: a.Cert, Tainted: a.Tainted})
	}
	for _, a := range b.JWTAuthorities {
		r.JWTAuthorities = append(r.JWTAuthorities, jwtRecord{KeyID: a.KeyID, PublicKey: a.PublicKey, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted})
	}
	data, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode bundle: %w", err)
	}
	return string(data), nil
}

func decodeBundle(td spiffeid.TrustDomain, data string) (*datastore.Bundle, error) {
	var r bundleRecord
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return nil, fmt.Errorf("decode bundle: %w", err)
	}
	b := &datastore.Bundle{TrustDomain: td, RefreshHint: r.RefreshHint, SequenceNumber: r.SequenceNumber, RevokedX509: r.RevokedX509}
	for _, a := range r.X509Authorities {
		b.X509Authorities = append(b.X509Authorities, datastore.X509Authority{Cert: a.Cert, Tainted: a.Tainted})
	}
	for _, a := range r.JWTAuthorities {
		b.JWTAuthorities = append(b.JWTAuthorities, datastore.JWTAuthority{KeyID: a.KeyID, PublicKey: a.PublicKey, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted})
	}
	return b, nil
}

// FetchBundle implements datastore.BundleStore.
func (s *Store) FetchBundle(ctx context.Context, td spiffeid.TrustDomain) (*datastore.Bundle, error) {
	b, err := s.fetchBundle(ctx, s.reader, td, false)
	if err == nil && b == nil {
		err = datastore.ErrNotFound
	}
	if err != nil {
		return nil, s.errorf(err, "fetch bundle %q", td)
	}
	return b, nil
}

// fetchBundle returns nil, nil when td has no bundle.
func (s *Store) fetchBundle(ctx context.Context, q querier, td spiffeid.TrustDomain, forUpdate bool) (*datastore.Bundle, error) {
	query := `SELECT data FROM bundles WHERE trust_domain = ?`
	if forUpdate && s.d.ForUpdate != "" {
		query += " " + s.d.ForUpdate
	}
	var data string
	err := q.QueryRowContext(ctx, s.q(query), td.Name()).Scan(&data)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return decodeBundle(td, data)
}

// ListBundles implements datastore.BundleStore, ordered by trust domain.
func (s *Store) ListBundles(ctx context.Context) ([]*datastore.Bundle, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT trust_domain, data FROM bundles ORDER BY trust_domain`)
	if err != nil {
		return nil, s.errorf(err, "list bundles")
	}
	defer rows.Close()
	var out []*datastore.Bundle
	for rows.Next() {
		var name, data string
		if err := rows.Scan(&name, &data); err != nil {
			return nil, s.errorf(err, "list bundles")
		}
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, s.errorf(err, "list bundles: trust domain %q", name)
		}
		b, err := decodeBundle(td, data)
		if err != nil {
			return nil, s.errorf(err, "list bundles: trust domain %q", name)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(err, "list bundles")
	}
	return out, nil
}

// UpdateBundle implements datastore.BundleStore. The transaction holds an
// exclusive lock for td (PostgreSQL: an advisory lock, which also covers the
// case of no row yet, plus SELECT ... FOR UPDATE; SQLite: the single writer
// connection's BEGIN IMMEDIATE), so fn is called exactly once and concurrent
// updaters, also on other servers sharing the database, run one after the
// other. fn must not call the store's write methods (it would wait for
// itself). The returned bundle's TrustDomain is td; a bundle naming another
// trust domain is an error, as is returning nil for an existing bundle.
// If the bundle does not exist and fn returns nil, nothing is written and
// UpdateBundle returns nil, nil.
func (s *Store) UpdateBundle(ctx context.Context, td spiffeid.TrustDomain, fn func(*datastore.Bundle) (*datastore.Bundle, error)) (*datastore.Bundle, error) {
	var out *datastore.Bundle
	var fnErr error
	err := s.write(ctx, []string{lockBundle + td.Name()}, func(tx *sql.Tx) error {
		cur, err := s.fetchBundle(ctx, tx, td, true)
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			fnErr = err
			return err
		}
		if next == cur {
			out = cur
			return nil
		}
		if next == nil {
			return errors.New("update function returned a nil bundle")
		}
		if !next.TrustDomain.IsZero() && next.TrustDomain != td {
			return fmt.Errorf("update function returned a bundle for trust domain %q", next.TrustDomain)
		}
		data, err := encodeBundle(next)
		if err != nil {
			return err
		}
		if cur != nil {
			res, err := tx.ExecContext(ctx, s.q(`UPDATE bundles SET data = ? WHERE trust_domain = ?`), data, td.Name())
			if err != nil {
				return err
			}
			if err := mustAffect(res); err != nil {
				return datastore.ErrConflict // deleted under us: only possible without the lock
			}
		} else {
			res, err := tx.ExecContext(ctx, s.q(`INSERT INTO bundles (trust_domain, data) VALUES (?, ?)
				ON CONFLICT (trust_domain) DO NOTHING`), td.Name(), data)
			if err != nil {
				return err
			}
			if err := mustAffect(res); err != nil {
				return datastore.ErrConflict // created under us: only possible without the lock
			}
		}
		// Return a copy: the caller may keep modifying what fn returned.
		out, err = decodeBundle(td, data)
		return err
	})
	if fnErr != nil {
		return nil, fnErr // as fn returned it; the transaction was rolled back
	}
	if err != nil {
		return nil, s.errorf(err, "update bundle %q", td)
	}
	return out, nil
}

// DeleteBundle implements datastore.BundleStore.
func (s *Store) DeleteBundle(ctx context.Context, td spiffeid.TrustDomain) error {
	err := s.write(ctx, []string{lockBundle + td.Name()}, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM bundles WHERE trust_domain = ?`), td.Name())
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return s.errorf(err, "delete bundle %q", td)
	}
	return nil
}
