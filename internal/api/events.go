package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
)

// EventLog is what the API reads of a datastore's event log besides the
// events themselves: the highest event IDs, read before loading so that
// polling starts there.
type EventLog interface {
	LastEntryEventID(ctx context.Context) (uint64, error)
	LastNodeEventID(ctx context.Context) (uint64, error)
}

// ownWrites counts this server's own successful writes per key while the
// event poller runs, so the poller skips re-reading what this server wrote
// (it already holds it). Skipping one event per own write is safe: every
// event makes the poller read the record's current state, so whichever
// event for a key it does process, it ends with what the store holds; and if
// the last event for a key is this server's own, the cache already holds
// exactly what was written last.
type ownWrites struct {
	mu sync.Mutex
	on bool
	n  map[string]int
}

func (o *ownWrites) add(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.on {
		o.n[key]++
	}
}

func (o *ownWrites) take(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n[key] == 0 {
		return false
	}
	if o.n[key]--; o.n[key] == 0 {
		delete(o.n, key)
	}
	return true
}

func (o *ownWrites) enabled() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.on
}

func (o *ownWrites) enable() {
	o.mu.Lock()
	o.on, o.n = true, make(map[string]int)
	o.mu.Unlock()
}

// recordingStore records the keys of successful entry and node writes.
type recordingStore struct {
	datastore.Store
	own *ownWrites
}

func (r recordingStore) CreateEntries(ctx context.Context, entries []*datastore.Entry) ([]*datastore.Entry, []error) {
	out, errs := r.Store.CreateEntries(ctx, entries)
	for i, err := range errs {
		if err == nil && out[i] != nil {
			r.own.add("e:" + out[i].ID)
		}
	}
	return out, errs
}

func (r recordingStore) UpdateEntry(ctx context.Context, id string, fn func(*datastore.Entry) (*datastore.Entry, error)) (*datastore.Entry, error) {
	out, err := r.Store.UpdateEntry(ctx, id, fn)
	if err == nil {
		r.own.add("e:" + id)
	}
	return out, err
}

func (r recordingStore) DeleteEntry(ctx context.Context, id string) (*datastore.Entry, error) {
	out, err := r.Store.DeleteEntry(ctx, id)
	if err == nil {
		r.own.add("e:" + id)
	}
	return out, err
}

func (r recordingStore) CreateNode(ctx context.Context, n *datastore.Node) error {
	err := r.Store.CreateNode(ctx, n)
	r.node(n.ID, err)
	return err
}

func (r recordingStore) AttestNode(ctx context.Context, n *datastore.Node, cond datastore.AttestCondition) (*datastore.Node, error) {
	out, err := r.Store.AttestNode(ctx, n, cond)
	r.node(n.ID, err)
	return out, err
}

func (r recordingStore) RenewNode(ctx context.Context, id spiffeid.ID, current, serial string, notAfter int64) (*datastore.Node, error) {
	out, err := r.Store.RenewNode(ctx, id, current, serial, notAfter)
	r.node(id, err)
	return out, err
}

func (r recordingStore) ActivateNodeSerial(ctx context.Context, id spiffeid.ID, serial string) (*datastore.Node, error) {
	out, err := r.Store.ActivateNodeSerial(ctx, id, serial)
	r.node(id, err)
	return out, err
}

func (r recordingStore) SetNodeAgentVersion(ctx context.Context, id spiffeid.ID, version string) (*datastore.Node, error) {
	out, err := r.Store.SetNodeAgentVersion(ctx, id, version)
	r.node(id, err)
	return out, err
}

func (r recordingStore) BanNode(ctx context.Context, id spiffeid.ID) (*datastore.Node, error) {
	out, err := r.Store.BanNode(ctx, id)
	r.node(id, err)
	return out, err
}

func (r recordingStore) DeleteNode(ctx context.Context, id spiffeid.ID) (*datastore.Node, error) {
	out, err := r.Store.DeleteNode(ctx, id)
	r.node(id, err)
	return out, err
}

// node records a successful write of node id (a failed one wrote no event).
func (r recordingStore) node(id spiffeid.ID, err error) {
	if err == nil {
		r.own.add("n:" + id.String())
	}
}

// reloadEntry makes the entry index hold entry id as the datastore does. It
// holds the entry write lock, so it cannot put back a state older than what
// a concurrent local write just stored.
func (s *Service) reloadEntry(ctx context.Context, id string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.reloadEntryLocked(ctx, id)
}

func (s *Service) reloadEntryLocked(ctx context.Context, id string) error {
	e, err := s.store.FetchEntry(ctx, id)
	switch {
	case err == nil:
		s.entries.PutEntry(e)
	case errors.Is(err, datastore.ErrNotFound):
		s.entries.DeleteEntry(id)
	default:
		return err
	}
	return nil
}

// eventCursor remembers the last applied entry and node events.
type eventCursor struct {
	entry, node uint64
}

// PollEvents applies entry and node changes that other servers sharing the
// datastore made since the last call (and, harmlessly, this server's own).
func (s *Service) PollEvents(ctx context.Context) error {
	evs, err := s.store.EntryEventsSince(ctx, s.cursor.entry)
	if err != nil {
		return fmt.Errorf("api: polling entry events: %w", err)
	}
	for _, ev := range evs {
		if s.own.take("e:" + ev.Key) {
			s.cursor.entry = ev.ID
			continue
		}
		if err := s.reloadEntry(ctx, ev.Key); err != nil {
			return fmt.Errorf("api: fetching entry %s: %w", ev.Key, err)
		}
		s.cursor.entry = ev.ID
	}
	nevs, err := s.store.NodeEventsSince(ctx, s.cursor.node)
	if err != nil {
		return fmt.Errorf("api: polling node events: %w", err)
	}
	for _, ev := range nevs {
		if s.own.take("n:" + ev.Key) {
			s.cursor.node = ev.ID
			continue
		}
		id, err := spiffeid.FromString(ev.Key)
		if err != nil {
			s.cursor.node = ev.ID
			continue
		}
		if err := s.reloadNode(ctx, id); err != nil {
			return fmt.Errorf("api: fetching node %s: %w", id, err)
		}
		s.cursor.node = ev.ID
	}
	if len(evs) > 0 || len(nevs) > 0 {
		s.metrics.entries.Set(float64(s.entries.Count()))
		s.metrics.agents.Set(float64(s.nodes.count()))
	}
	return nil
}

// pollTimeout bounds one poll, so that a database that stops answering
// (rather than refusing) cannot stall the poller past the next ticks: the
// poll fails, is retried, and the cursor keeps what was applied.
func pollTimeout(every time.Duration) time.Duration { return max(10*time.Second, 10*every) }

// RunEventPoller calls PollEvents every interval until ctx ends. A failed
// poll changes nothing it has not applied (the cursors stay at the last
// applied events), so the next tick retries from there and, once the
// datastore answers again, reads every event written meanwhile by the other
// servers — events commit in ID order (the store's event locks), so no event
// can appear later below a cursor. Failures are logged once per outage,
// through the datastore health (DatastoreHealth), not once per tick.
func (s *Service) RunEventPoller(ctx context.Context, every time.Duration) {
	s.own.enable()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pollTimeout(every))
		s.pollMu.Lock()
		s.lastPollStart = time.Now()
		err := s.PollEvents(pctx)
		s.pollMu.Unlock()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.storeDown(err)
		default:
			s.storeUp()
		}
	}
}

// DatastoreHealth is what a server knows of its datastore's reachability.
type DatastoreHealth struct {
	// Up is false from a failed poll (or a call that found the datastore
	// unavailable) until the next successful poll.
	Up bool
	// Since is when the current state began (zero: up since start).
	Since time.Time
	// Err is the failure that began the outage (nil when up); it is for
	// logs and local health output, never for remote callers.
	Err error
}

// storeHealth tracks the datastore's reachability, logging each change.
type storeHealth struct {
	mu    sync.Mutex
	state DatastoreHealth
	init  bool
}

// DatastoreHealth reports whether the datastore answered at the last poll.
// While it is down the server keeps serving agents from memory (syncs,
// X509-SVIDs and JWT-SVIDs for the entries it holds, bundles) and answers
// writes Unavailable.
//
// What that means for bans and evictions (the security choice): no ban can
// commit while the database is down, on any server, so nothing served from
// memory undoes one, and a ban committed here is in this server's index at
// once. A ban committed on another server reaches this one at its next poll,
// within one poll interval while the database answers; the one case that
// takes longer is a ban committed on another server in the last poll
// interval before the outage began, which takes effect here at the first
// poll after the database returns. That agent cannot renew its agent SVID
// meanwhile (RenewAgent needs a write), so the outage can extend what it is
// served by at most the remaining lifetime of the agent SVID it holds. The
// alternative, refusing every agent once a poll fails, would turn a
// database outage into an outage of all issuance.
func (s *Service) DatastoreHealth() DatastoreHealth {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	if !s.health.init {
		return DatastoreHealth{Up: true}
	}
	return s.health.state
}

// storeDown records that the datastore failed (a poll, or a call that got
// datastore.ErrUnavailable), logging the start of an outage once.
func (s *Service) storeDown(err error) {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.init && !h.state.Up {
		return
	}
	h.init = true
	h.state = DatastoreHealth{Up: false, Since: s.now(), Err: err}
	s.metrics.datastoreUp.Set(0)
	s.log.Warn("datastore unavailable; serving agents from memory and refusing writes until it returns", "err", err)
}

// storeUp records a successful poll, logging the end of an outage.
func (s *Service) storeUp() {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.init || h.state.Up {
		return
	}
	down := s.now().Sub(h.state.Since)
	h.state = DatastoreHealth{Up: true, Since: s.now()}
	s.metrics.datastoreUp.Set(1)
	s.log.Info("datastore available again; caught up on the other servers' changes", "outage", down.Round(time.Millisecond))
}

// catchUp applies now the events other servers wrote since the last poll,
// for a call about to be refused for want of an entry this server may not
// have read yet: a child tier's downstream entry or an admin entry created
// on another replica within the last poll interval (the child's first
// NewDownstreamX509CA would be refused and the child would exit). It
// reports whether a poll that started after this call did succeed.
// Concurrent callers share one poll (a poll that began after a caller
// arrived has read everything committed before it); a server not sharing
// its datastore has nothing to catch up with.
func (s *Service) catchUp(ctx context.Context) bool {
	if !s.own.enabled() {
		return false
	}
	arrived := time.Now()
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.lastPollStart.After(arrived) {
		return s.lastPollOK
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s.lastPollStart = time.Now()
	err := s.PollEvents(pctx)
	s.lastPollOK = err == nil
	return s.lastPollOK
}
