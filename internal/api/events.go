package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
)

// eventLog is implemented by datastores that several servers can share: the
// highest event IDs, read before loading so that polling starts there.
type eventLog interface {
	LastEntryEventID(ctx context.Context) (uint64, error)
	LastNodeEventID(ctx context.Context) (uint64, error)
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
		e, err := s.store.FetchEntry(ctx, ev.Key)
		switch {
		case err == nil:
			s.entries.PutEntry(e)
		case errors.Is(err, datastore.ErrNotFound):
			s.entries.DeleteEntry(ev.Key)
		default:
			return fmt.Errorf("api: fetching entry %s: %w", ev.Key, err)
		}
		s.cursor.entry = ev.ID
	}
	nevs, err := s.store.NodeEventsSince(ctx, s.cursor.node)
	if err != nil {
		return fmt.Errorf("api: polling node events: %w", err)
	}
	for _, ev := range nevs {
		id, err := spiffeid.FromString(ev.Key)
		if err != nil {
			s.cursor.node = ev.ID
			continue
		}
		n, err := s.store.FetchNode(ctx, id)
		switch {
		case err == nil:
			s.nodes.put(n)
			s.entries.PutNodeSelectors(n.ID, n.Selectors)
		case errors.Is(err, datastore.ErrNotFound):
			s.nodes.delete(id)
			s.entries.DeleteNode(id)
		default:
			return fmt.Errorf("api: fetching node %s: %w", id, err)
		}
		s.cursor.node = ev.ID
	}
	if len(evs) > 0 || len(nevs) > 0 {
		s.metrics.entries.Set(float64(s.entries.Count()))
		s.metrics.agents.Set(float64(len(s.nodes.list())))
	}
	return nil
}

// RunEventPoller calls PollEvents every interval until ctx ends, logging
// failures once per change of state.
func (s *Service) RunEventPoller(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.pollMu.Lock()
		err := s.PollEvents(ctx)
		s.pollMu.Unlock()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.log.Warn("datastore event polling failing; serving from memory", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("datastore event polling recovered")
			failing = false
		}
	}
}
