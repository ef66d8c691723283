package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

const nodeColumns = `spiffe_id, attestation_type, cert_serial, cert_not_after, new_cert_serial,
	new_cert_not_after, can_reattest, agent_version`

// CreateNode implements datastore.NodeStore.
func (s *Store) CreateNode(ctx context.Context, n *datastore.Node) error {
	id := n.ID.String()
	sels := normalizeSelectors(n.Selectors)
	now := s.now().Unix()
	err := s.write(ctx, []string{lockNodeEvents}, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO nodes (`+nodeColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			id, n.AttestationType, n.CertSerial, n.CertNotAfter, n.NewCertSerial, n.NewCertNotAfter,
			n.CanReattest, n.AgentVersion)
		if err != nil {
			if s.d.IsUniqueViolation(err) {
				return datastore.ErrAlreadyExists
			}
			return err
		}
		if err := s.insertSelectors(ctx, tx, "node_selectors", "spiffe_id", id, sels); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, "node_events", "spiffe_id", id, now)
	})
	if err != nil {
		return s.errorf(err, "create node %q", id)
	}
	return nil
}

// AttestNode implements datastore.NodeStore. Every node write holds the node
// events lock, so the read of the current row and the write that depends on
// it cannot interleave with another writer, also across servers sharing the
// database.
func (s *Store) AttestNode(ctx context.Context, n *datastore.Node, cond datastore.AttestCondition) (*datastore.Node, error) {
	joinToken := cond.JoinToken
	id := n.ID.String()
	sels := normalizeSelectors(n.Selectors)
	now := s.now().Unix()
	var out *datastore.Node
	err := s.write(ctx, []string{lockNodeEvents}, func(tx *sql.Tx) error {
		cur, err := s.fetchNode(ctx, tx, id)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			cur = nil
		case err != nil:
			return err
		case cur.Banned():
			return datastore.ErrBanned
		case cond.FirstUse:
			return datastore.ErrAlreadyExists
		}
		if joinToken != "" {
			res, err := tx.ExecContext(ctx, s.q(`DELETE FROM join_tokens WHERE token = ?`), joinToken)
			if err != nil {
				return fmt.Errorf("consume join token: %w", err)
			}
			if err := mustAffect(res); err != nil {
				return err
			}
		}
		if cur == nil {
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO nodes (`+nodeColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
				id, n.AttestationType, n.CertSerial, n.CertNotAfter, n.NewCertSerial, n.NewCertNotAfter,
				n.CanReattest, n.AgentVersion)
		} else {
			_, err = tx.ExecContext(ctx, s.q(`UPDATE nodes SET attestation_type = ?, cert_serial = ?,
				cert_not_after = ?, new_cert_serial = ?, new_cert_not_after = ?, can_reattest = ?
				WHERE spiffe_id = ?`),
				n.AttestationType, n.CertSerial, n.CertNotAfter, n.NewCertSerial, n.NewCertNotAfter, n.CanReattest, id)
			if err == nil {
				_, err = tx.ExecContext(ctx, s.q(`DELETE FROM node_selectors WHERE spiffe_id = ?`), id)
			}
		}
		if err != nil {
			return err
		}
		if err := s.insertSelectors(ctx, tx, "node_selectors", "spiffe_id", id, sels); err != nil {
			return err
		}
		if err := s.insertEvent(ctx, tx, "node_events", "spiffe_id", id, now); err != nil {
			return err
		}
		out, err = s.fetchNode(ctx, tx, id)
		return err
	})
	if err != nil {
		// The token is a secret: never put it in an error.
		return nil, s.errorf(err, "attest node %q", id)
	}
	return out, nil
}

// RenewNode implements datastore.NodeStore.
func (s *Store) RenewNode(ctx context.Context, id spiffeid.ID, current, serial string, notAfter int64) (*datastore.Node, error) {
	if current == "" {
		return nil, s.errorf(datastore.ErrConflict, "renew node %q: no current serial", id)
	}
	return s.updateNode(ctx, id, "renew", `new_cert_serial = ?, new_cert_not_after = ?`, []any{serial, notAfter},
		`cert_serial = ?`, []any{current})
}

// ActivateNodeSerial implements datastore.NodeStore.
func (s *Store) ActivateNodeSerial(ctx context.Context, id spiffeid.ID, serial string) (*datastore.Node, error) {
	if serial == "" {
		return nil, s.errorf(datastore.ErrConflict, "activate serial of node %q: empty serial", id)
	}
	return s.updateNode(ctx, id, "activate serial of",
		`cert_serial = new_cert_serial, cert_not_after = new_cert_not_after, new_cert_serial = '', new_cert_not_after = 0`, nil,
		`new_cert_serial = ?`, []any{serial})
}

// SetNodeAgentVersion implements datastore.NodeStore.
func (s *Store) SetNodeAgentVersion(ctx context.Context, id spiffeid.ID, version string) (*datastore.Node, error) {
	return s.updateNode(ctx, id, "set agent version of", `agent_version = ?`, []any{version}, "", nil)
}

// BanNode implements datastore.NodeStore.
func (s *Store) BanNode(ctx context.Context, id spiffeid.ID) (*datastore.Node, error) {
	return s.updateNode(ctx, id, "ban", `cert_serial = '', new_cert_serial = ''`, nil, "", nil)
}

// updateNode runs one UPDATE of the named columns, with an optional extra
// condition, records the event and returns the row as stored. No row: the
// node is missing (ErrNotFound) or the condition failed (ErrConflict).
func (s *Store) updateNode(ctx context.Context, id spiffeid.ID, what, set string, setArgs []any, cond string, condArgs []any) (*datastore.Node, error) {
	key := id.String()
	now := s.now().Unix()
	where := `spiffe_id = ?`
	if cond != "" {
		where += ` AND ` + cond
	}
	args := append(append(append([]any{}, setArgs...), key), condArgs...)
	var out *datastore.Node
	err := s.write(ctx, []string{lockNodeEvents}, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE nodes SET `+set+` WHERE `+where), args...)
		if err != nil {
			return err
		}
		if err := mustAffect(res); err != nil {
			if _, ferr := s.fetchNode(ctx, tx, key); ferr == nil {
				return datastore.ErrConflict
			}
			return err
		}
		if err := s.insertEvent(ctx, tx, "node_events", "spiffe_id", key, now); err != nil {
			return err
		}
		out, err = s.fetchNode(ctx, tx, key)
		return err
	})
	if err != nil {
		return nil, s.errorf(err, "%s node %q", what, key)
	}
	return out, nil
}

// FetchNode implements datastore.NodeStore.
func (s *Store) FetchNode(ctx context.Context, id spiffeid.ID) (*datastore.Node, error) {
	var n *datastore.Node
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = s.fetchNode(ctx, tx, id.String())
		return err
	})
	if err != nil {
		return nil, s.errorf(err, "fetch node %q", id)
	}
	return n, nil
}

func (s *Store) fetchNode(ctx context.Context, q querier, id string) (*datastore.Node, error) {
	rows, err := q.QueryContext(ctx, s.q(`SELECT `+nodeColumns+` FROM nodes WHERE spiffe_id = ?`), id)
	if err != nil {
		return nil, err
	}
	nodes, err := scanNodes(rows)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, datastore.ErrNotFound
	}
	n := nodes[0]
	if n.Selectors, err = s.selectorsOf(ctx, q, `SELECT type, value FROM node_selectors WHERE spiffe_id = ?`, id); err != nil {
		return nil, err
	}
	return n, nil
}

// ListNodes implements datastore.NodeStore (two queries joined in memory),
// ordered by SPIFFE ID.
func (s *Store) ListNodes(ctx context.Context) ([]*datastore.Node, error) {
	var nodes []*datastore.Node
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY spiffe_id`)
		if err != nil {
			return err
		}
		if nodes, err = scanNodes(rows); err != nil {
			return err
		}
		byID := make(map[string]*datastore.Node, len(nodes))
		for _, n := range nodes {
			byID[n.ID.String()] = n
		}
		rows, err = tx.QueryContext(ctx, `SELECT spiffe_id, type, value FROM node_selectors`)
		if err != nil {
			return fmt.Errorf("query selectors: %w", err)
		}
		defer rows.Close()
		var id string
		for rows.Next() {
			var sel selector.Selector
			if err := rows.Scan(&id, &sel.Type, &sel.Value); err != nil {
				return fmt.Errorf("scan selector: %w", err)
			}
			if n := byID[id]; n != nil {
				n.Selectors = append(n.Selectors, sel)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("query selectors: %w", err)
		}
		for _, n := range nodes {
			slices.SortFunc(n.Selectors, selector.Compare)
		}
		return nil
	})
	if err != nil {
		return nil, s.errorf(err, "list nodes")
	}
	return nodes, nil
}

func scanNodes(rows *sql.Rows) ([]*datastore.Node, error) {
	defer rows.Close()
	var out []*datastore.Node
	var id string
	for rows.Next() {
		n := new(datastore.Node)
		err := rows.Scan(&id, &n.AttestationType, &n.CertSerial, &n.CertNotAfter, &n.NewCertSerial,
			&n.NewCertNotAfter, &n.CanReattest, &n.AgentVersion)
		if err != nil {
			return nil, fmt.Errorf("scan node: %w", err)
		}
		if id != "" {
			if n.ID, err = spiffeid.FromString(id); err != nil {
				return nil, fmt.Errorf("node %q: %w", id, err)
			}
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query nodes: %w", err)
	}
	return out, nil
}

// DeleteNode implements datastore.NodeStore.
func (s *Store) DeleteNode(ctx context.Context, id spiffeid.ID) (*datastore.Node, error) {
	var n *datastore.Node
	key := id.String()
	now := s.now().Unix()
	err := s.write(ctx, []string{lockNodeEvents}, func(tx *sql.Tx) error {
		var err error
		if n, err = s.fetchNode(ctx, tx, key); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM nodes WHERE spiffe_id = ?`), key); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, "node_events", "spiffe_id", key, now)
	})
	if err != nil {
		return nil, s.errorf(err, "delete node %q", key)
	}
	return n, nil
}

// NodeEventsSince implements datastore.NodeStore.
func (s *Store) NodeEventsSince(ctx context.Context, after uint64) ([]datastore.Event, error) {
	events, err := s.eventsSince(ctx, "node_events", "spiffe_id", after)
	if err != nil {
		return nil, s.errorf(err, "list node events")
	}
	return events, nil
}

// LastNodeEventID returns the highest node event ID (0 if none). A server
// reads it before ListNodes and then polls NodeEventsSince from it.
func (s *Store) LastNodeEventID(ctx context.Context) (uint64, error) {
	id, err := s.lastEventID(ctx, "node_events")
	if err != nil {
		return 0, s.errorf(err, "read last node event")
	}
	return id, nil
}

// PruneEvents deletes entry and node events recorded before the given time
// and returns how many it deleted. Event IDs are never reused, so
// pollers are unaffected except that they cannot replay pruned history.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for _, table := range []string{"entry_events", "node_events"} {
		res, err := s.writer.ExecContext(ctx, s.q(`DELETE FROM `+table+` WHERE created_at < ?`), before.Unix())
		if err != nil {
			return total, s.errorf(err, "prune %s", table)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, s.errorf(err, "prune %s", table)
		}
		total += int(n)
	}
	return total, nil
}

func normalizeSelectors(sels []selector.Selector) []selector.Selector {
	if len(sels) == 0 {
		return nil
	}
	return selector.Sorted(sels)
}

// mustAffect turns an UPDATE or DELETE that matched no row into ErrNotFound.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("rows affected: %w", err)
	}
	if n == 0 {
		return datastore.ErrNotFound
	}
	return nil
}
