package tfprovider

import (
	"context"
	"fmt"
	"sync"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// tofu applies up to ten resources at once, each in its own call to the
// provider. Entry creates and deletes arriving together are gathered into
// one BatchCreateEntry or BatchDeleteEntry call: a thousand arbor_entry
// resources cost a hundred calls, not a thousand.
//
// tofu's calls arrive a few milliseconds apart, so a batch is sent when no
// request has joined it for batchQuiet, or batchMaxWait after its first
// request, or at once when it holds batchMax requests.
const (
	batchQuiet   = 10 * time.Millisecond
	batchMaxWait = 50 * time.Millisecond
	batchMax     = 100
)

// batcher gathers requests of type Req into calls of call, which answers
// one Res per request in order (or fails them all).
type batcher[Req, Res any] struct {
	call func(ctx context.Context, reqs []Req) ([]Res, error)

	mu      sync.Mutex
	pending []*waiter[Req, Res]
	timer   *time.Timer
	first   time.Time // when the first pending request arrived
}

type waiter[Req, Res any] struct {
	req  Req
	done chan batchResult[Res]
}

type batchResult[Res any] struct {
	res Res
	err error
}

// do adds req to the next batch and waits for its result or ctx's end.
func (b *batcher[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	w := &waiter[Req, Res]{req: req, done: make(chan batchResult[Res], 1)}
	b.mu.Lock()
	b.pending = append(b.pending, w)
	switch {
	case len(b.pending) >= batchMax:
		batch := b.take()
		b.mu.Unlock()
		go b.send(batch)
	case len(b.pending) == 1:
		b.first = time.Now()
		b.timer = time.AfterFunc(batchQuiet, b.flush)
		b.mu.Unlock()
	default:
		// Wait batchQuiet more, up to batchMaxWait after the first.
		wait := min(batchQuiet, batchMaxWait-time.Since(b.first))
		if b.timer.Stop() {
			b.timer.Reset(max(wait, 0))
		}
		b.mu.Unlock()
	}
	select {
	case r := <-w.done:
		return r.res, r.err
	case <-ctx.Done():
		var zero Res
		return zero, ctx.Err()
	}
}

// take empties the pending batch; b.mu is held.
func (b *batcher[Req, Res]) take() []*waiter[Req, Res] {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	batch := b.pending
	b.pending = nil
	return batch
}

func (b *batcher[Req, Res]) flush() {
	b.mu.Lock()
	batch := b.take()
	b.mu.Unlock()
	if len(batch) > 0 {
		b.send(batch)
	}
}

// send makes one call for batch, bounded by the call's own context (the
// callers' contexts are theirs: one caller giving up does not cancel the
// others' requests).
func (b *batcher[Req, Res]) send(batch []*waiter[Req, Res]) {
	reqs := make([]Req, len(batch))
	for i, w := range batch {
		reqs[i] = w.req
	}
	res, err := b.call(context.Background(), reqs)
	if err == nil && len(res) != len(reqs) {
		err = fmt.Errorf("the server answered %d results for %d requests", len(res), len(reqs))
	}
	for i, w := range batch {
		if err != nil {
			w.done <- batchResult[Res]{err: err}
			continue
		}
		w.done <- batchResult[Res]{res: res[i]}
	}
}

// entryBatchers are the batchers of one *Server.
type entryBatchers struct {
	create *batcher[*types.Entry, *entryv1.BatchCreateEntryResponse_Result]
	delete *batcher[string, *entryv1.BatchDeleteEntryResponse_Result]
}

// entries returns s's batchers, made on first use.
func (s *Server) entries() *entryBatchers {
	s.batchOnce.Do(func() { s.batchers = s.newEntryBatchers() })
	return s.batchers
}

func (s *Server) newEntryBatchers() *entryBatchers {
	b := &entryBatchers{
		create: &batcher[*types.Entry, *entryv1.BatchCreateEntryResponse_Result]{
			call: func(ctx context.Context, es []*types.Entry) ([]*entryv1.BatchCreateEntryResponse_Result, error) {
				c, err := s.Client()
				if err != nil {
					return nil, err
				}
				ctx, cancel := context.WithTimeout(ctx, s.Timeout())
				defer cancel()
				resp, err := entryv1.NewEntryClient(c.Conn()).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: es})
				if err != nil {
					return nil, c.Error("entry create", err)
				}
				return resp.Results, nil
			},
		},
		delete: &batcher[string, *entryv1.BatchDeleteEntryResponse_Result]{
			call: func(ctx context.Context, ids []string) ([]*entryv1.BatchDeleteEntryResponse_Result, error) {
				c, err := s.Client()
				if err != nil {
					return nil, err
				}
				ctx, cancel := context.WithTimeout(ctx, s.Timeout())
				defer cancel()
				resp, err := entryv1.NewEntryClient(c.Conn()).BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: ids})
				if err != nil {
					return nil, c.Error("entry delete", err)
				}
				return resp.Results, nil
			},
		},
	}
	return b
}
