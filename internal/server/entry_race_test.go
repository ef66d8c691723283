package server_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/internal/server"
)

// TestMaskedEntryUpdatesOnTwoReplicasKeepEachOthersFields: two servers
// sharing PostgreSQL update different fields of one entry at the same time
// (BatchUpdateEntry with an input mask). Each update is merged onto the
// entry as the datastore holds it, so neither puts back the other's field
// from a copy its poller had not refreshed yet.
func TestMaskedEntryUpdatesOnTwoReplicasKeepEachOthersFields(t *testing.T) {
	dsn := postgresDSN(t)
	pg := func(c *server.Config) {
		c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, 50*time.Millisecond
	}
	a := startServer(t, pg)
	b := startServer(t, pg)
	id := a.createEntry(&types.Entry{ParentId: protoID("/node"), SpiffeId: protoID("/both"), Selectors: []*types.Selector{sel("unix", "uid:7")}})
	waitFor(t, "server B holding the entry", func() bool {
		_, err := entryv1.NewEntryClient(b.admin).GetEntry(ctxT(t), &entryv1.GetEntryRequest{Id: id})
		return err == nil
	})
	const rounds = 60
	update := func(h *harness, e *types.Entry, mask *types.EntryMask) error {
		resp, err := entryv1.NewEntryClient(h.admin).BatchUpdateEntry(ctxT(t), &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{e}, InputMask: mask})
		if err != nil {
			return err
		}
		if st := resp.Results[0].Status; st.Code != int32(codes.OK) {
			return fmt.Errorf("status %d: %s", st.Code, st.Message)
		}
		return nil
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= rounds; i++ {
			if err := update(a, &types.Entry{Id: id, Hint: fmt.Sprintf("h%d", i)}, &types.EntryMask{Hint: true}); err != nil {
				t.Errorf("update hint on A, round %d: %v", i, err)
				return
			}
		}
	})
	wg.Go(func() {
		for i := 1; i <= rounds; i++ {
			if err := update(b, &types.Entry{Id: id, X509SvidTtl: int32(100 + i)}, &types.EntryMask{X509SvidTtl: true}); err != nil {
				t.Errorf("update x509_svid_ttl on B, round %d: %v", i, err)
				return
			}
		}
	})
	wg.Wait()
	for _, h := range []*harness{a, b} {
		waitFor(t, "both servers holding both last updates", func() bool {
			e, err := entryv1.NewEntryClient(h.admin).GetEntry(ctxT(t), &entryv1.GetEntryRequest{Id: id})
			return err == nil && e.Hint == fmt.Sprintf("h%d", rounds) && e.X509SvidTtl == 100+rounds && e.RevisionNumber == 2*rounds
		})
	}
}
