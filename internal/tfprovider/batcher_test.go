package tfprovider

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/cli/admin"
)

// calls is how many times the server answered method OK, from its
// arbor_api_calls_total metric.
func (s *testServer) calls(t *testing.T, method string) int {
	t.Helper()
	v := s.metric(t, `arbor_api_calls_total{code="OK",method="/spire.api.server.entry.v1.Entry/`+method+`"}`)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("metric value %q: %v", v, err)
	}
	return n
}

// Creates and deletes made at the same time are coalesced into fewer
// BatchCreateEntry and BatchDeleteEntry calls, each caller getting its
// own entry back.
func TestBatcherCoalescesConcurrentCalls(t *testing.T) {
	s := startServer(t)
	srv := &Server{opts: serverOptions{socket: s.socket}}
	const n = 40
	createsBefore, deletesBefore := s.calls(t, "BatchCreateEntry"), s.calls(t, "BatchDeleteEntry")

	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &types.Entry{
				SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/w/%d", i)},
				ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: "/node"},
				Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}},
			}
			got, err := srv.createEntry(ctxT(t), e)
			if err != nil {
				errs <- err
				return
			}
			if got.SpiffeId.Path != e.SpiffeId.Path {
				errs <- fmt.Errorf("create of %s answered %s", e.SpiffeId.Path, got.SpiffeId.Path)
				return
			}
			ids[i] = got.Id
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	creates := s.calls(t, "BatchCreateEntry") - createsBefore
	if creates < 1 || creates >= n/2 {
		t.Errorf("%d concurrent creates made %d BatchCreateEntry calls, want between 1 and %d", n, creates, n/2-1)
	}
	es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{})
	if err != nil || len(es) != n {
		t.Fatalf("server holds %d entries (%v), want %d", len(es), err, n)
	}

	errs = make(chan error, n)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.deleteEntry(ctxT(t), id); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deletes := s.calls(t, "BatchDeleteEntry") - deletesBefore
	if deletes < 1 || deletes >= n/2 {
		t.Errorf("%d concurrent deletes made %d BatchDeleteEntry calls, want between 1 and %d", n, deletes, n/2-1)
	}
	if es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{}); err != nil || len(es) != 0 {
		t.Errorf("after deletes the server holds %d entries (%v), want 0", len(es), err)
	}
}

// A failed call fails every request of its batch with the same one line.
func TestBatcherFailsTheWholeBatch(t *testing.T) {
	srv := &Server{opts: serverOptions{socket: "/nonexistent/a.sock"}}
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := srv.deleteEntry(ctxT(t), "x")
			want := "cannot reach the server: admin socket /nonexistent/a.sock does not exist (is the server running?)"
			if err == nil || err.Error() != want {
				t.Errorf("deleteEntry = %v, want %q", err, want)
			}
		}()
	}
	wg.Wait()
}

// Fifty entries in one configuration are all created, in at most half as
// many calls, and destroyed.
func TestFiftyEntries(t *testing.T) {
	s := startServer(t)
	before := s.calls(t, "BatchCreateEntry")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: s.config(`
resource "arbor_entry" "w" {
  count     = 50
  spiffe_id = "spiffe://example.org/w/${count.index}"
  parent_id = "spiffe://example.org/node"
  selectors = ["unix:uid:${count.index}"]
}
`),
			Check: func(st *terraform.State) error {
				es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{})
				if err != nil {
					return err
				}
				seen := map[string]bool{}
				for _, e := range es {
					seen[idString(e.SpiffeId)] = true
				}
				for i := range 50 {
					if !seen[fmt.Sprintf("spiffe://example.org/w/%d", i)] {
						return fmt.Errorf("entry w/%d is not on the server (%d entries)", i, len(es))
					}
					if _, ok := st.RootModule().Resources[fmt.Sprintf("arbor_entry.w.%d", i)]; !ok {
						return fmt.Errorf("arbor_entry.w[%d] is not in state", i)
					}
				}
				// tofu applies ten at a time: at least two per call on average.
				calls := s.calls(t, "BatchCreateEntry") - before
				t.Logf("50 entries in %d BatchCreateEntry calls", calls)
				if calls > 25 {
					return fmt.Errorf("50 entries took %d BatchCreateEntry calls, want at most 25", calls)
				}
				return nil
			},
		}},
		CheckDestroy: func(*terraform.State) error {
			if es, err := s.admin.ListEntries(ctxT(t), admin.EntryFilter{}); err != nil || len(es) != 0 {
				return fmt.Errorf("after destroy the server holds %d entries (%v)", len(es), err)
			}
			return nil
		},
	})
}

// The batcher's rule with a call that only counts: requests made together
// share one call and each gets its own answer; more than batchMax at once
// take more than one.
func TestBatcherGroupsRequests(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	b := &batcher[int, int]{call: func(_ context.Context, reqs []int) ([]int, error) {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		out := make([]int, len(reqs))
		for i, r := range reqs {
			out[i] = r * 2
		}
		return out, nil
	}}
	run := func(n int) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := b.do(ctxT(t), i)
				if err != nil || got != 2*i {
					t.Errorf("do(%d) = %d, %v; want %d", i, got, err, 2*i)
				}
			}()
		}
		wg.Wait()
	}
	run(30)
	mu.Lock()
	if len(sizes) > 3 {
		t.Errorf("30 requests at once made %d calls %v, want at most 3", len(sizes), sizes)
	}
	sizes = nil
	mu.Unlock()
	run(batchMax + 1)
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range sizes {
		if n > batchMax {
			t.Errorf("a call carried %d requests, more than batchMax %d", n, batchMax)
		}
		total += n
	}
	if len(sizes) < 2 || total != batchMax+1 {
		t.Errorf("%d requests made calls of %v, want at least two adding up to %d", batchMax+1, sizes, batchMax+1)
	}
}
