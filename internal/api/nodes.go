package api

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

// Attested nodes live in the datastore and, for authorizing every agent
// call, in nodeIndex. Every write to a node goes through writeNode: it holds
// that node's lock across the datastore write and the index update, and
// the index takes the node exactly as the datastore returned it after the
// write. The datastore's node writes each change only their own fields under
// a condition (datastore.NodeStore), so a write based on a stale copy — a
// PostStatus or renewal racing with a ban — cannot put an old serial back; and
// because the event poller applies other servers' changes under the same
// lock, the index never ends on an older state than the datastore's.

// nodeIndex is the in-memory view of attested nodes that every agent call is
// authorized against. Nodes in it are never modified, only replaced.
type nodeIndex struct {
	mu    sync.RWMutex
	nodes map[spiffeid.ID]*datastore.Node

	seed  maphash.Seed
	locks [64]sync.Mutex // per-node write locks, striped by ID
}

func newNodeIndex() *nodeIndex {
	return &nodeIndex{nodes: make(map[spiffeid.ID]*datastore.Node), seed: maphash.MakeSeed()}
}

// lock takes the write lock of node id and returns its unlock.
func (n *nodeIndex) lock(id spiffeid.ID) func() {
	m := &n.locks[maphash.String(n.seed, id.String())%uint64(len(n.locks))]
	m.Lock()
	return m.Unlock
}

func (n *nodeIndex) reset(nodes []*datastore.Node) {
	m := make(map[spiffeid.ID]*datastore.Node, len(nodes))
	for _, node := range nodes {
		m[node.ID] = node
	}
	n.mu.Lock()
	n.nodes = m
	n.mu.Unlock()
}

func (n *nodeIndex) get(id spiffeid.ID) (*datastore.Node, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	node, ok := n.nodes[id]
	return node, ok
}

func (n *nodeIndex) put(node *datastore.Node) {
	n.mu.Lock()
	n.nodes[node.ID] = node
	n.mu.Unlock()
}

func (n *nodeIndex) delete(id spiffeid.ID) {
	n.mu.Lock()
	delete(n.nodes, id)
	n.mu.Unlock()
}

func (n *nodeIndex) count() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.nodes)
}

func (n *nodeIndex) list() []*datastore.Node {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*datastore.Node, 0, len(n.nodes))
	for _, node := range n.nodes {
		out = append(out, node)
	}
	return out
}

// writeNode runs one datastore write of node id under its lock and makes
// the index (and the entry index's node selectors) follow the result: the
// returned node on success; on any datastore refusal (missing, conflict,
// banned) the node as the datastore now holds it, so the index never keeps
// a state the datastore has left.
func (s *Service) writeNode(ctx context.Context, id spiffeid.ID, write func() (*datastore.Node, error)) (*datastore.Node, error) {
	unlock := s.nodes.lock(id)
	defer unlock()
	n, err := write()
	switch {
	case err == nil:
		s.applyNode(n)
		return n, nil
	case errors.Is(err, datastore.ErrNotFound), errors.Is(err, datastore.ErrConflict), errors.Is(err, datastore.ErrBanned):
		if rerr := s.reloadNodeLocked(ctx, id); rerr != nil {
			s.log.WarnContext(ctx, "re-reading node after a refused write", "spiffe_id", id.String(), "err", rerr)
		}
	}
	return nil, err
}

// deleteNode deletes node id from the datastore and the indexes.
func (s *Service) deleteNode(ctx context.Context, id spiffeid.ID) error {
	unlock := s.nodes.lock(id)
	defer unlock()
	_, err := s.store.DeleteNode(ctx, id)
	if err == nil || errors.Is(err, datastore.ErrNotFound) {
		s.forgetNode(id)
	}
	return err
}

// reloadNode makes the indexes hold node id as the datastore does (the
// event poller's way of applying another server's write).
func (s *Service) reloadNode(ctx context.Context, id spiffeid.ID) error {
	unlock := s.nodes.lock(id)
	defer unlock()
	return s.reloadNodeLocked(ctx, id)
}

func (s *Service) reloadNodeLocked(ctx context.Context, id spiffeid.ID) error {
	n, err := s.store.FetchNode(ctx, id)
	switch {
	case err == nil:
		s.applyNode(n)
	case errors.Is(err, datastore.ErrNotFound):
		s.forgetNode(id)
	default:
		return err
	}
	return nil
}

// applyNode puts n into the node index, and its selectors into the entry
// index when they changed. The caller holds n's lock.
func (s *Service) applyNode(n *datastore.Node) {
	old, had := s.nodes.get(n.ID)
	s.nodes.put(n)
	if !had || !selector.Equal(old.Selectors, n.Selectors) {
		s.entries.PutNodeSelectors(n.ID, n.Selectors)
	}
	if !had {
		s.metrics.agents.Set(float64(s.nodes.count()))
	}
}

func (s *Service) forgetNode(id spiffeid.ID) {
	s.nodes.delete(id)
	s.entries.DeleteNode(id)
	s.metrics.agents.Set(float64(s.nodes.count()))
}

// nodeDenial is the PermissionDenied an agent gets when its node, as now
// stored, does not accept the SVID serial it presented: the reason detail
// tells spire-agent whether to re-attest or stop.
func (s *Service) nodeDenial(id spiffeid.ID, serial string) error {
	n, ok := s.nodes.get(id)
	switch {
	case !ok:
		return agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, "agent %s is not attested", id)
	case n.Banned():
		return agentDenied(types.PermissionDeniedDetails_AGENT_BANNED, "agent %s is banned", id)
	case !slices.Contains([]string{n.CertSerial, n.NewCertSerial}, serial):
		return agentDenied(types.PermissionDeniedDetails_AGENT_NOT_ACTIVE, "agent %s presented SVID serial %s, which is not its current one", id, serial)
	}
	return nil
}
