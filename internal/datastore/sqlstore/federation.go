package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
)

const lockFederation = "federation"

// CreateFederationRelationship implements datastore.FederationStore.
func (s *Store) CreateFederationRelationship(ctx context.Context, r *datastore.FederationRelationship) error {
	_, err := s.writer.ExecContext(ctx, s.q(`INSERT INTO federation_relationships
		(trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id) VALUES (?, ?, ?, ?)`),
		r.TrustDomain.Name(), r.BundleEndpointURL, r.Profile, idString(r.EndpointSPIFFEID))
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			err = datastore.ErrAlreadyExists
		}
		return s.errorf(err, "create federation relationship %q", r.TrustDomain)
	}
	return nil
}

// FetchFederationRelationship implements datastore.FederationStore.
func (s *Store) FetchFederationRelationship(ctx context.Context, td spiffeid.TrustDomain) (*datastore.FederationRelationship, error) {
	r, err := s.fetchRelationship(ctx, s.reader, td)
	if err != nil {
		return nil, s.errorf(err, "fetch federation relationship %q", td)
	}
	return r, nil
}

func (s *Store) fetchRelationship(ctx context.Context, q querier, td spiffeid.TrustDomain) (*datastore.FederationRelationship, error) {
	rows, err := q.QueryContext(ctx, s.q(`SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id
		FROM federation_relationships WHERE trust_domain = ?`), td.Name())
	if err != nil {
		return nil, err
	}
	rs, err := scanRelationships(rows)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, datastore.ErrNotFound
	}
	return rs[0], nil
}

// ListFederationRelationships implements datastore.FederationStore.
func (s *Store) ListFederationRelationships(ctx context.Context) ([]*datastore.FederationRelationship, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id
		FROM federation_relationships ORDER BY trust_domain`)
	if err != nil {
		return nil, s.errorf(err, "list federation relationships")
	}
	rs, err := scanRelationships(rows)
	if err != nil {
		return nil, s.errorf(err, "list federation relationships")
	}
	return rs, nil
}

// UpdateFederationRelationship implements datastore.FederationStore.
func (s *Store) UpdateFederationRelationship(ctx context.Context, td spiffeid.TrustDomain, fn func(*datastore.FederationRelationship) (*datastore.FederationRelationship, error)) (*datastore.FederationRelationship, error) {
	var out *datastore.FederationRelationship
	err := s.write(ctx, []string{lockFederation}, func(tx *sql.Tx) error {
		cur, err := s.fetchRelationship(ctx, tx, td)
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		n := *next
		n.TrustDomain = td
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE federation_relationships SET bundle_endpoint_url = ?,
			profile = ?, endpoint_spiffe_id = ? WHERE trust_domain = ?`),
			n.BundleEndpointURL, n.Profile, idString(n.EndpointSPIFFEID), td.Name()); err != nil {
			return err
		}
		out = &n
		return nil
	})
	if err != nil {
		return nil, s.errorf(err, "update federation relationship %q", td)
	}
	return out, nil
}

// DeleteFederationRelationship implements datastore.FederationStore.
func (s *Store) DeleteFederationRelationship(ctx context.Context, td spiffeid.TrustDomain) error {
	res, err := s.writer.ExecContext(ctx, s.q(`DELETE FROM federation_relationships WHERE trust_domain = ?`), td.Name())
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return s.errorf(err, "delete federation relationship %q", td)
	}
	return nil
}

func scanRelationships(rows *sql.Rows) ([]*datastore.FederationRelationship, error) {
	defer rows.Close()
	var out []*datastore.FederationRelationship
	for rows.Next() {
		var td, endpointID string
		r := new(datastore.FederationRelationship)
		if err := rows.Scan(&td, &r.BundleEndpointURL, &r.Profile, &endpointID); err != nil {
			return nil, fmt.Errorf("scan federation relationship: %w", err)
		}
		var err error
		if r.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
			return nil, fmt.Errorf("federation relationship %q: %w", td, err)
		}
		if endpointID != "" {
			if r.EndpointSPIFFEID, err = spiffeid.FromString(endpointID); err != nil {
				return nil, fmt.Errorf("federation relationship %q: endpoint ID: %w", td, err)
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, errors.Join(errors.New("query federation relationships"), err)
	}
	return out, nil
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}
