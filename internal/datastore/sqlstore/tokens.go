package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/arborid/arbor/internal/datastore"
)

// CreateJoinToken implements datastore.TokenStore. ExpiresAt is stored with
// one-second precision.
func (s *Store) CreateJoinToken(ctx context.Context, t *datastore.JoinToken) error {
	_, err := s.writer.ExecContext(ctx, s.q(`INSERT INTO join_tokens (token, expires_at) VALUES (?, ?)`),
		t.Token, t.ExpiresAt.Unix())
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			err = datastore.ErrAlreadyExists
		}
		// The token is a secret: never put it in an error.
		return s.errorf(err, "create join token")
	}
	return nil
}

// FetchJoinToken implements datastore.TokenStore.
func (s *Store) FetchJoinToken(ctx context.Context, token string) (*datastore.JoinToken, error) {
	var expires int64
	err := s.reader.QueryRowContext(ctx, s.q(`SELECT expires_at FROM join_tokens WHERE token = ?`), token).Scan(&expires)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			err = datastore.ErrNotFound
		}
		return nil, s.errorf(err, "fetch join token")
	}
	return &datastore.JoinToken{Token: token, ExpiresAt: time.Unix(expires, 0).UTC()}, nil
}

// PruneJoinTokens implements datastore.TokenStore.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error) {
	res, err := s.writer.ExecContext(ctx, s.q(`DELETE FROM join_tokens WHERE expires_at < ?`), expiredBefore.Unix())
	if err != nil {
		return 0, s.errorf(err, "prune join tokens")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.errorf(err, "prune join tokens")
	}
	return int(n), nil
}
