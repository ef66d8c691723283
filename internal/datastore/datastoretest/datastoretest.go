// Package datastoretest is the one test suite every datastore backend runs:
// Run exercises a fresh store through datastore.Store, RunDurable reopens and
// shares one database, and the Bench functions measure the hot paths.
package datastoretest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/selector"
)

// FixedNow is the Unix time Clock returns. Backends under test must be opened
// with Clock, so the suite can check the times the store sets.
const FixedNow int64 = 1_700_000_000

// Clock returns FixedNow; pass it as the backend's clock.
func Clock() time.Time { return time.Unix(FixedNow, 0) }

// testTimeout bounds every test of the suite.
const testTimeout = 60 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	otherTD = spiffeid.RequireTrustDomainFromString("partner.example")
)

func id(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

func sels(ss ...string) []selector.Selector {
	out := make([]selector.Selector, len(ss))
	for i, s := range ss {
		sel, err := selector.Parse(s)
		if err != nil {
			panic(err)
		}
		out[i] = sel
	}
	return out
}

// cmpOpts compare store records: nil and empty slices are equal, and the
// order of selectors does not matter.
var cmpOpts = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmpopts.SortSlices(func(a, b selector.Selector) bool { return selector.Compare(a, b) < 0 }),
	cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b }),
	cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b }),
}

// fullEntry returns an entry with every field set to something non-zero.
func fullEntry(path string) *datastore.Entry {
	return &datastore.Entry{
		SPIFFEID:                id(path),
		ParentID:                id("/spire/agent/join_token/abc"),
		Selectors:               sels("unix:uid:1000", "k8s:ns:default", "unix:gid:0"),
		X509SVIDTTL:             3600,
		JWTSVIDTTL:              300,
		FederatesWith:           []spiffeid.TrustDomain{otherTD},
		Admin:                   true,
		Downstream:              true,
		DNSNames:                []string{"b.example.org", "a.example.org"},
		StoreSVID:               true,
		Hint:                    "hint",
		ExpiresAt:               FixedNow + 86400,
		JWTSVIDIncludeJTI:       true,
		DisableX509SVIDPrefetch: true,
	}
}

// Run runs the suite against stores from open, which must return a new,
// empty store opened with Clock each call (closing it is open's job, e.g. in
// t.Cleanup). The subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) datastore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s datastore.Store)
	}{
		{"EntryCRUD", testEntryCRUD},
		{"EntryDuplicates", testEntryDuplicates},
		{"CreateEntriesPartialFailure", testCreateEntriesPartialFailure},
		{"CreateEntriesLargeBatch", testCreateEntriesLargeBatch},
		{"UpdateEntryDuplicate", testUpdateEntryDuplicate},
		{"EntryEvents", testEntryEvents},
		{"ListEntriesJoinsSelectors", testListEntriesJoinsSelectors},
		{"NodeCRUD", testNodeCRUD},
		{"NodeEvents", testNodeEvents},
		{"JoinTokens", testJoinTokens},
		{"ConcurrentConsumeJoinToken", testConcurrentConsumeJoinToken},
		{"Bundles", testBundles},
		{"UpdateBundleUnchangedWritesNothing", testUpdateBundleUnchanged},
		{"UpdateBundleError", testUpdateBundleError},
		{"ConcurrentUpdateBundle", testConcurrentUpdateBundle},
		{"FederationRelationships", testFederationRelationships},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

func testEntryCRUD(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	in := fullEntry("/web")
	out, errs := s.CreateEntries(ctx, []*datastore.Entry{in})
	if errs[0] != nil {
		t.Fatalf("CreateEntries() error = %v", errs[0])
	}
	created := out[0]
	if created.ID == "" {
		t.Fatal("CreateEntries() left the ID empty, want a new UUID")
	}
	if in.ID != "" || in.CreatedAt != 0 {
		t.Errorf("CreateEntries() modified its input: ID %q, CreatedAt %d", in.ID, in.CreatedAt)
	}
	want := fullEntry("/web")
	want.ID = created.ID
	want.CreatedAt = FixedNow
	if diff := cmp.Diff(want, created, cmpOpts...); diff != "" {
		t.Errorf("CreateEntries() returned (-want +got):\n%s", diff)
	}
	// DNS names keep their order: the first becomes the certificate's CN.
	if !slices.Equal(created.DNSNames, want.DNSNames) {
		t.Errorf("DNSNames = %v, want %v in that order", created.DNSNames, want.DNSNames)
	}

	got, err := s.FetchEntry(ctx, created.ID)
	if err != nil {
		t.Fatalf("FetchEntry() error = %v", err)
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("FetchEntry() (-want +got):\n%s", diff)
	}
	if !slices.Equal(got.DNSNames, want.DNSNames) {
		t.Errorf("FetchEntry() DNSNames = %v, want %v in that order", got.DNSNames, want.DNSNames)
	}

	// A given ID is kept.
	given := &datastore.Entry{ID: "given-id", SPIFFEID: id("/db"), ParentID: id("/node"), Selectors: sels("unix:uid:5")}
	out, errs = s.CreateEntries(ctx, []*datastore.Entry{given})
	if errs[0] != nil || out[0].ID != "given-id" {
		t.Fatalf("CreateEntries(ID %q) = %v, %v; want the ID kept", given.ID, out[0], errs[0])
	}

	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatalf("ListEntries() error = %v", err)
	}
	wantGiven := *given
	wantGiven.CreatedAt = FixedNow
	wantList := []*datastore.Entry{want, &wantGiven}
	sortEntries(wantList)
	sortEntries(list)
	if diff := cmp.Diff(wantList, list, cmpOpts...); diff != "" {
		t.Errorf("ListEntries() (-want +got):\n%s", diff)
	}

	// Update replaces every field, keeps CreatedAt and bumps the revision.
	upd := &datastore.Entry{
		ID:        created.ID,
		SPIFFEID:  id("/web2"),
		ParentID:  id("/node2"),
		Selectors: sels("docker:image:nginx"),
		DNSNames:  []string{"web2.example.org"},
		CreatedAt: 5, // ignored
	}
	updated, err := replaceEntry(ctx, s, upd)
	if err != nil {
		t.Fatalf("UpdateEntry() error = %v", err)
	}
	wantUpd := *upd
	wantUpd.CreatedAt = FixedNow
	wantUpd.RevisionNumber = 1
	if diff := cmp.Diff(&wantUpd, updated, cmpOpts...); diff != "" {
		t.Errorf("UpdateEntry() (-want +got):\n%s", diff)
	}
	got, err = s.FetchEntry(ctx, created.ID)
	if err != nil {
		t.Fatalf("FetchEntry() after update error = %v", err)
	}
	if diff := cmp.Diff(&wantUpd, got, cmpOpts...); diff != "" {
		t.Errorf("FetchEntry() after update (-want +got):\n%s", diff)
	}
	// fn is handed the entry as stored, and its error aborts the update.
	boom := errors.New("refused")
	if _, err := s.UpdateEntry(ctx, created.ID, func(cur *datastore.Entry) (*datastore.Entry, error) {
		if diff := cmp.Diff(&wantUpd, cur, cmpOpts...); diff != "" {
			t.Errorf("UpdateEntry() handed fn (-want +got):\n%s", diff)
		}
		cur.Hint = "never stored"
		return nil, boom
	}); !errors.Is(err, boom) {
		t.Errorf("UpdateEntry(fn fails) error = %v, want %v", err, boom)
	}
	if updated, err = replaceEntry(ctx, s, upd); err != nil || updated.RevisionNumber != 2 || updated.Hint != "" {
		t.Errorf("second UpdateEntry() = revision %v, %v; want 2, nil and nothing of the aborted update", revision(updated), err)
	}

	deleted, err := s.DeleteEntry(ctx, created.ID)
	if err != nil {
		t.Fatalf("DeleteEntry() error = %v", err)
	}
	wantUpd.RevisionNumber = 2
	if diff := cmp.Diff(&wantUpd, deleted, cmpOpts...); diff != "" {
		t.Errorf("DeleteEntry() returned (-want +got):\n%s", diff)
	}

	missing := []struct {
		name string
		call func() error
	}{
		{"FetchEntry", func() error { _, err := s.FetchEntry(ctx, created.ID); return err }},
		{"DeleteEntry", func() error { _, err := s.DeleteEntry(ctx, created.ID); return err }},
		{"UpdateEntry", func() error { _, err := replaceEntry(ctx, s, upd); return err }},
	}
	for _, m := range missing {
		if err := m.call(); !errors.Is(err, datastore.ErrNotFound) {
			t.Errorf("%s(deleted entry) error = %v, want ErrNotFound", m.name, err)
		}
	}
	list, err = s.ListEntries(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "given-id" {
		t.Errorf("ListEntries() after delete = %d entries, %v; want only given-id", len(list), err)
	}
}

// replaceEntry stores e in place of the entry with its ID.
func replaceEntry(ctx context.Context, s datastore.Store, e *datastore.Entry) (*datastore.Entry, error) {
	return s.UpdateEntry(ctx, e.ID, func(*datastore.Entry) (*datastore.Entry, error) { return e, nil })
}

func revision(e *datastore.Entry) any {
	if e == nil {
		return nil
	}
	return e.RevisionNumber
}

func sortEntries(es []*datastore.Entry) {
	slices.SortFunc(es, func(a, b *datastore.Entry) int { return compareStrings(a.ID, b.ID) })
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testEntryDuplicates(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	base := &datastore.Entry{ID: "base", SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: sels("a:1", "b:2", "c:3")}
	if _, errs := s.CreateEntries(ctx, []*datastore.Entry{base}); errs[0] != nil {
		t.Fatalf("CreateEntries(base) error = %v", errs[0])
	}
	tests := []struct {
		name  string
		entry *datastore.Entry
		dup   bool
	}{
		{"same selectors in another order", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: sels("c:3", "a:1", "b:2")}, true},
		{"same selectors repeated", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: sels("c:3", "a:1", "b:2", "a:1")}, true},
		{"other fields differ", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: sels("a:1", "b:2", "c:3"), Admin: true, X509SVIDTTL: 60}, true},
		{"same entry ID", &datastore.Entry{ID: "base", SPIFFEID: id("/other"), ParentID: id("/node"), Selectors: sels("z:9")}, true},
		{"subset of selectors", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: sels("a:1", "b:2")}, false},
		{"superset of selectors", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: sels("a:1", "b:2", "c:3", "d:4")}, false},
		{"other parent", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node2"), Selectors: sels("a:1", "b:2", "c:3")}, false},
		{"other SPIFFE ID", &datastore.Entry{SPIFFEID: id("/svc2"), ParentID: id("/node"), Selectors: sels("a:1", "b:2", "c:3")}, false},
		{"selector split differently", &datastore.Entry{SPIFFEID: id("/svc"), ParentID: id("/node"), Selectors: []selector.Selector{{Type: "a", Value: "1b:2"}, {Type: "c", Value: "3"}}}, false},
	}
	for _, tt := range tests {
		out, errs := s.CreateEntries(ctx, []*datastore.Entry{tt.entry})
		if !tt.dup {
			if errs[0] != nil {
				t.Errorf("%s: CreateEntries() error = %v, want nil", tt.name, errs[0])
			}
			continue
		}
		if !errors.Is(errs[0], datastore.ErrAlreadyExists) {
			t.Errorf("%s: CreateEntries() error = %v, want ErrAlreadyExists", tt.name, errs[0])
			continue
		}
		if out[0] == nil || out[0].ID != "base" {
			t.Errorf("%s: CreateEntries() out = %+v, want the existing entry %q", tt.name, out[0], "base")
		}
	}
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatalf("ListEntries() error = %v", err)
	}
	if want := 1 + 5; len(list) != want {
		t.Errorf("ListEntries() = %d entries, want %d", len(list), want)
	}
}

func testCreateEntriesPartialFailure(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	existing := &datastore.Entry{SPIFFEID: id("/existing"), ParentID: id("/node"), Selectors: sels("a:1")}
	out, errs := s.CreateEntries(ctx, []*datastore.Entry{existing})
	if errs[0] != nil {
		t.Fatalf("CreateEntries(existing) error = %v", errs[0])
	}
	existingID := out[0].ID

	batch := []*datastore.Entry{
		{SPIFFEID: id("/w0"), ParentID: id("/node"), Selectors: sels("a:1")},
		{SPIFFEID: id("/w1"), ParentID: id("/node"), Selectors: sels("a:1")},
		{SPIFFEID: id("/existing"), ParentID: id("/node"), Selectors: sels("a:1")}, // dup of a stored one
		{SPIFFEID: id("/w3"), ParentID: id("/node"), Selectors: sels("a:1")},
		{SPIFFEID: id("/w1"), ParentID: id("/node"), Selectors: sels("a:1")}, // dup within the batch
		nil,
		{SPIFFEID: id("/w6"), ParentID: id("/node"), Selectors: sels("a:1")},
	}
	out, errs = s.CreateEntries(ctx, batch)
	if len(out) != len(batch) || len(errs) != len(batch) {
		t.Fatalf("CreateEntries() = %d results, %d errors; want %d each", len(out), len(errs), len(batch))
	}
	for i := range batch {
		switch i {
		case 2, 4:
			if !errors.Is(errs[i], datastore.ErrAlreadyExists) {
				t.Errorf("errs[%d] = %v, want ErrAlreadyExists", i, errs[i])
			}
		case 5:
			if errs[i] == nil {
				t.Errorf("errs[%d] = nil for a nil entry, want an error", i)
			}
		default:
			if errs[i] != nil {
				t.Errorf("errs[%d] = %v, want nil", i, errs[i])
			}
		}
	}
	if out[2] == nil || out[2].ID != existingID {
		t.Errorf("out[2] = %+v, want the existing entry %s", out[2], existingID)
	}
	if out[4] == nil || out[1] == nil || out[4].ID != out[1].ID {
		t.Errorf("out[4] = %+v, want the entry created at index 1 (%+v)", out[4], out[1])
	}
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatalf("ListEntries() error = %v", err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.SPIFFEID.Path())
	}
	slices.Sort(got)
	want := []string{"/existing", "/w0", "/w1", "/w3", "/w6"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListEntries() SPIFFE IDs (-want +got):\n%s", diff)
	}
}

// testCreateEntriesLargeBatch creates more entries in one call than one
// multi-row INSERT holds, with zero, one and several selectors and every
// optional field, and reads them all back as created, with one event each
// in the batch's order.
func testCreateEntriesLargeBatch(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	const n = 1234
	batch := make([]*datastore.Entry, n)
	for i := range batch {
		e := &datastore.Entry{SPIFFEID: id(fmt.Sprintf("/w/%d", i)), ParentID: id(fmt.Sprintf("/node/%d", i%7))}
		switch i % 3 {
		case 1:
			e.Selectors = sels(fmt.Sprintf("unix:uid:%d", i))
		case 2:
			e.Selectors = sels("k8s:ns:default", fmt.Sprintf("k8s:sa:%d", i), "k8s:pod-label:app:x")
			e.DNSNames = []string{fmt.Sprintf("w%d.example.org", i)}
			e.FederatesWith = []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("other.org")}
			e.X509SVIDTTL, e.JWTSVIDTTL, e.Hint, e.ExpiresAt, e.Admin = 60, 30, "h", 4102444800, true
		}
		batch[i] = e
	}
	before, err := s.EntryEventsSince(ctx, 0)
	if err != nil {
		t.Fatalf("EntryEventsSince() error = %v", err)
	}
	out, errs := s.CreateEntries(ctx, batch)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("CreateEntries() error = %v", err)
	}
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatalf("ListEntries() error = %v", err)
	}
	if len(list) != n {
		t.Fatalf("ListEntries() = %d entries, want %d", len(list), n)
	}
	stored := make(map[string]*datastore.Entry, n)
	for _, e := range list {
		stored[e.ID] = e
	}
	for i, e := range out {
		if diff := cmp.Diff(e, stored[e.ID], cmpOpts...); diff != "" {
			t.Fatalf("entry %d as stored differs from as returned (-returned +stored):\n%s", i, diff)
		}
		if e.SPIFFEID != batch[i].SPIFFEID || len(e.Selectors) != len(batch[i].Selectors) {
			t.Fatalf("out[%d] = %+v, want the entry for %s", i, e, batch[i].SPIFFEID)
		}
	}
	events, err := s.EntryEventsSince(ctx, 0)
	if err != nil {
		t.Fatalf("EntryEventsSince() error = %v", err)
	}
	events = events[len(before):]
	if len(events) != n {
		t.Fatalf("%d events for %d created entries", len(events), n)
	}
	for i, ev := range events {
		if ev.Key != out[i].ID {
			t.Fatalf("event %d is for %q, want %q (the batch's order)", i, ev.Key, out[i].ID)
		}
	}
}

func testUpdateEntryDuplicate(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	out, errs := s.CreateEntries(ctx, []*datastore.Entry{
		{SPIFFEID: id("/a"), ParentID: id("/node"), Selectors: sels("x:1", "y:2")},
		{SPIFFEID: id("/b"), ParentID: id("/node"), Selectors: sels("x:1")},
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("CreateEntries() error = %v", err)
	}
	b := *out[1]
	b.SPIFFEID = id("/a")
	b.Selectors = sels("y:2", "x:1")
	if _, err := replaceEntry(ctx, s, &b); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("UpdateEntry(into a duplicate) error = %v, want ErrAlreadyExists", err)
	}
	got, err := s.FetchEntry(ctx, out[1].ID)
	if err != nil {
		t.Fatalf("FetchEntry() error = %v", err)
	}
	if diff := cmp.Diff(out[1], got, cmpOpts...); diff != "" {
		t.Errorf("entry changed by a failed update (-want +got):\n%s", diff)
	}
}

func testEntryEvents(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	out, errs := s.CreateEntries(ctx, []*datastore.Entry{
		{ID: "e1", SPIFFEID: id("/a"), ParentID: id("/node"), Selectors: sels("x:1")},
		{ID: "e2", SPIFFEID: id("/b"), ParentID: id("/node"), Selectors: sels("x:1")},
		{ID: "e3", SPIFFEID: id("/a"), ParentID: id("/node"), Selectors: sels("x:1")}, // duplicate: no event
	})
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], datastore.ErrAlreadyExists) {
		t.Fatalf("CreateEntries() errors = %v", errs)
	}
	e1 := *out[0]
	e1.Hint = "changed"
	if _, err := replaceEntry(ctx, s, &e1); err != nil {
		t.Fatalf("UpdateEntry() error = %v", err)
	}
	if _, err := s.DeleteEntry(ctx, "e2"); err != nil {
		t.Fatalf("DeleteEntry() error = %v", err)
	}
	// Failures write no event.
	if _, err := s.DeleteEntry(ctx, "e2"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("DeleteEntry(missing) error = %v, want ErrNotFound", err)
	}

	events, err := s.EntryEventsSince(ctx, 0)
	if err != nil {
		t.Fatalf("EntryEventsSince(0) error = %v", err)
	}
	checkEvents(t, events, []string{"e1", "e2", "e1", "e2"})
	if len(events) != 4 {
		return
	}
	tail, err := s.EntryEventsSince(ctx, events[1].ID)
	if err != nil {
		t.Fatalf("EntryEventsSince(%d) error = %v", events[1].ID, err)
	}
	if diff := cmp.Diff(events[2:], tail); diff != "" {
		t.Errorf("EntryEventsSince(%d) (-want +got):\n%s", events[1].ID, diff)
	}
	none, err := s.EntryEventsSince(ctx, events[3].ID)
	if err != nil || len(none) != 0 {
		t.Errorf("EntryEventsSince(last) = %v, %v; want none", none, err)
	}
}

// checkEvents checks the keys in order and that IDs strictly increase.
func checkEvents(t *testing.T, events []datastore.Event, keys []string) {
	t.Helper()
	var got []string
	for i, ev := range events {
		got = append(got, ev.Key)
		if i > 0 && ev.ID <= events[i-1].ID {
			t.Errorf("event %d has ID %d after %d, want increasing IDs", i, ev.ID, events[i-1].ID)
		}
	}
	if diff := cmp.Diff(keys, got); diff != "" {
		t.Errorf("event keys (-want +got):\n%s", diff)
	}
}

func testListEntriesJoinsSelectors(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	const n = 300
	batch := make([]*datastore.Entry, n)
	for i := range batch {
		batch[i] = &datastore.Entry{
			ID:        fmt.Sprintf("entry-%03d", i),
			SPIFFEID:  id(fmt.Sprintf("/w%d", i)),
			ParentID:  id("/node"),
			Selectors: sels(fmt.Sprintf("unix:uid:%d", i), fmt.Sprintf("k8s:pod:%d", i%7)),
		}
		if i%10 == 0 {
			batch[i].Selectors = nil // an entry without selectors
		}
	}
	if _, errs := s.CreateEntries(ctx, batch); errors.Join(errs...) != nil {
		t.Fatalf("CreateEntries(%d) error = %v", n, errors.Join(errs...))
	}
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatalf("ListEntries() error = %v", err)
	}
	if len(list) != n {
		t.Fatalf("ListEntries() = %d entries, want %d", len(list), n)
	}
	sortEntries(list)
	for i, e := range list {
		want := batch[i]
		if e.ID != want.ID || !selector.Equal(e.Selectors, want.Selectors) || e.CreatedAt != FixedNow {
			t.Errorf("ListEntries()[%d] = %s %v created %d, want %s %v created %d", i, e.ID, e.Selectors, e.CreatedAt, want.ID, want.Selectors, FixedNow)
		}
	}
}

func testNodeCRUD(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	n := &datastore.Node{
		ID:              id("/spire/agent/x509pop/abc"),
		AttestationType: "x509pop",
		CertSerial:      "12345678901234567890",
		CertNotAfter:    FixedNow + 3600,
		NewCertSerial:   "42",
		NewCertNotAfter: FixedNow + 7200,
		CanReattest:     true,
		Selectors:       sels("x509pop:subject:cn:agent", "x509pop:ca:fingerprint:ff"),
		AgentVersion:    "1.13.3",
	}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatalf("CreateNode() error = %v", err)
	}
	if err := s.CreateNode(ctx, n); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Errorf("CreateNode(again) error = %v, want ErrAlreadyExists", err)
	}
	got, err := s.FetchNode(ctx, n.ID)
	if err != nil {
		t.Fatalf("FetchNode() error = %v", err)
	}
	if diff := cmp.Diff(n, got, cmpOpts...); diff != "" {
		t.Errorf("FetchNode() (-want +got):\n%s", diff)
	}

	// Each targeted write changes its own fields only.
	if got, err = s.SetNodeAgentVersion(ctx, n.ID, "1.15.3"); err != nil || got.AgentVersion != "1.15.3" || got.CertSerial != n.CertSerial {
		t.Errorf("SetNodeAgentVersion() = %+v, %v; want version 1.15.3 and serials kept", got, err)
	}
	if got, err = s.ActivateNodeSerial(ctx, n.ID, "42"); err != nil || got.CertSerial != "42" || got.CertNotAfter != FixedNow+7200 || got.NewCertSerial != "" {
		t.Errorf("ActivateNodeSerial(42) = %+v, %v; want current serial 42", got, err)
	}
	if _, err = s.ActivateNodeSerial(ctx, n.ID, "42"); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("ActivateNodeSerial(42) again error = %v, want ErrConflict", err)
	}
	if got, err = s.RenewNode(ctx, n.ID, "42", "43", FixedNow+9000); err != nil || got.NewCertSerial != "43" || got.CertSerial != "42" {
		t.Errorf("RenewNode(42 -> 43) = %+v, %v; want new serial 43 beside 42", got, err)
	}
	if _, err = s.RenewNode(ctx, n.ID, "12345678901234567890", "44", FixedNow+9000); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("RenewNode(from a serial no longer current) error = %v, want ErrConflict", err)
	}

	// Ban: serials cleared, everything else kept; nothing brings them back.
	banned, err := s.BanNode(ctx, n.ID)
	if err != nil {
		t.Fatalf("BanNode() error = %v", err)
	}
	if !banned.Banned() || banned.AgentVersion != "1.15.3" || len(banned.Selectors) != 2 {
		t.Errorf("BanNode() = %+v, want banned with version and selectors kept", banned)
	}
	if _, err := s.RenewNode(ctx, n.ID, "42", "45", FixedNow+9000); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("RenewNode(banned) error = %v, want ErrConflict", err)
	}
	if _, err := s.ActivateNodeSerial(ctx, n.ID, "43"); !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("ActivateNodeSerial(banned) error = %v, want ErrConflict", err)
	}
	if _, err := s.AttestNode(ctx, n, datastore.AttestCondition{}); !errors.Is(err, datastore.ErrBanned) {
		t.Errorf("AttestNode(banned) error = %v, want ErrBanned", err)
	}
	if _, err := s.SetNodeAgentVersion(ctx, n.ID, "1.15.3"); err != nil {
		t.Errorf("SetNodeAgentVersion(banned) error = %v", err)
	}
	got, err = s.FetchNode(ctx, n.ID)
	if err != nil {
		t.Fatalf("FetchNode() after ban error = %v", err)
	}
	if diff := cmp.Diff(banned, got, cmpOpts...); diff != "" {
		t.Errorf("FetchNode() after ban and refused writes (-want +got):\n%s", diff)
	}

	other := &datastore.Node{ID: id("/spire/agent/join_token/t"), AttestationType: "join_token", CertSerial: "1"}
	if err := s.CreateNode(ctx, other); err != nil {
		t.Fatalf("CreateNode(other) error = %v", err)
	}
	list, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatalf("ListNodes() error = %v", err)
	}
	wantList := []*datastore.Node{other, banned} // ordered by SPIFFE ID
	slices.SortFunc(list, func(a, b *datastore.Node) int { return compareStrings(a.ID.String(), b.ID.String()) })
	if diff := cmp.Diff(wantList, list, cmpOpts...); diff != "" {
		t.Errorf("ListNodes() (-want +got):\n%s", diff)
	}

	deleted, err := s.DeleteNode(ctx, n.ID)
	if err != nil {
		t.Fatalf("DeleteNode() error = %v", err)
	}
	if diff := cmp.Diff(banned, deleted, cmpOpts...); diff != "" {
		t.Errorf("DeleteNode() returned (-want +got):\n%s", diff)
	}
	missing := []struct {
		name string
		call func() error
	}{
		{"FetchNode", func() error { _, err := s.FetchNode(ctx, n.ID); return err }},
		{"DeleteNode", func() error { _, err := s.DeleteNode(ctx, n.ID); return err }},
		{"SetNodeAgentVersion", func() error { _, err := s.SetNodeAgentVersion(ctx, n.ID, "v"); return err }},
		{"BanNode", func() error { _, err := s.BanNode(ctx, n.ID); return err }},
		{"RenewNode", func() error { _, err := s.RenewNode(ctx, n.ID, "42", "46", 1); return err }},
		{"ActivateNodeSerial", func() error { _, err := s.ActivateNodeSerial(ctx, n.ID, "43"); return err }},
	}
	for _, m := range missing {
		if err := m.call(); !errors.Is(err, datastore.ErrNotFound) {
			t.Errorf("%s(deleted node) error = %v, want ErrNotFound", m.name, err)
		}
	}
	// A deleted node can attest again.
	if err := s.CreateNode(ctx, n); err != nil {
		t.Errorf("CreateNode(after delete) error = %v", err)
	}
	testAttestNode(t, s)
}

func testNodeEvents(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	a := &datastore.Node{ID: id("/agent/a"), CertSerial: "1"}
	b := &datastore.Node{ID: id("/agent/b"), CertSerial: "2"}
	for _, n := range []*datastore.Node{a, b} {
		if err := s.CreateNode(ctx, n); err != nil {
			t.Fatalf("CreateNode(%s) error = %v", n.ID, err)
		}
	}
	if err := s.CreateNode(ctx, a); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("CreateNode(dup) error = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.RenewNode(ctx, a.ID, "1", "3", 0); err != nil {
		t.Fatalf("RenewNode() error = %v", err)
	}
	if _, err := s.RenewNode(ctx, a.ID, "9", "4", 0); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("RenewNode(stale serial) error = %v, want ErrConflict (and no event)", err)
	}
	if _, err := s.DeleteNode(ctx, b.ID); err != nil {
		t.Fatalf("DeleteNode() error = %v", err)
	}
	events, err := s.NodeEventsSince(ctx, 0)
	if err != nil {
		t.Fatalf("NodeEventsSince(0) error = %v", err)
	}
	checkEvents(t, events, []string{a.ID.String(), b.ID.String(), a.ID.String(), b.ID.String()})
	if len(events) == 4 {
		tail, err := s.NodeEventsSince(ctx, events[2].ID)
		if err != nil || len(tail) != 1 || tail[0] != events[3] {
			t.Errorf("NodeEventsSince(%d) = %v, %v; want [%v]", events[2].ID, tail, err, events[3])
		}
	}
	// Entry and node events are separate logs.
	if entryEvents, err := s.EntryEventsSince(ctx, 0); err != nil || len(entryEvents) != 0 {
		t.Errorf("EntryEventsSince(0) = %v, %v; want none", entryEvents, err)
	}
}

func testJoinTokens(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	tokens := []*datastore.JoinToken{
		{Token: "old", ExpiresAt: time.Unix(FixedNow-10, 0)},
		{Token: "edge", ExpiresAt: time.Unix(FixedNow, 0)},
		{Token: "fresh", ExpiresAt: time.Unix(FixedNow+600, 0)},
		{Token: "other", ExpiresAt: time.Unix(FixedNow+600, 0)},
	}
	for _, tok := range tokens {
		if err := s.CreateJoinToken(ctx, tok); err != nil {
			t.Fatalf("CreateJoinToken(%s) error = %v", tok.Token, err)
		}
	}
	if err := s.CreateJoinToken(ctx, tokens[2]); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Errorf("CreateJoinToken(dup) error = %v, want ErrAlreadyExists", err)
	}

	got, err := s.FetchJoinToken(ctx, "fresh")
	if err != nil {
		t.Fatalf("FetchJoinToken() error = %v", err)
	}
	if got.Token != "fresh" || !got.ExpiresAt.Equal(tokens[2].ExpiresAt) {
		t.Errorf("FetchJoinToken() = %s expiring %v, want fresh expiring %v", got.Token, got.ExpiresAt, tokens[2].ExpiresAt)
	}
	if _, err := consumeJoinToken(ctx, s, "fresh"); err != nil {
		t.Fatalf("AttestNode(with token) error = %v", err)
	}
	if _, err := consumeJoinToken(ctx, s, "fresh"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("AttestNode(token used) error = %v, want ErrNotFound", err)
	}
	if _, err := consumeJoinToken(ctx, s, "never-created"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("AttestNode(token unknown) error = %v, want ErrNotFound", err)
	}

	n, err := s.PruneJoinTokens(ctx, time.Unix(FixedNow, 0))
	if err != nil || n != 1 {
		t.Errorf("PruneJoinTokens(now) = %d, %v; want 1 (only the one expired before now)", n, err)
	}
	if _, err := consumeJoinToken(ctx, s, "old"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("AttestNode(token pruned) error = %v, want ErrNotFound", err)
	}
	for _, tok := range []string{"edge", "other"} {
		if _, err := consumeJoinToken(ctx, s, tok); err != nil {
			t.Errorf("AttestNode(token %s) error = %v, want it kept by the prune", tok, err)
		}
	}
}

func testConcurrentConsumeJoinToken(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	for round := range 5 {
		token := fmt.Sprintf("race-%d", round)
		if err := s.CreateJoinToken(ctx, &datastore.JoinToken{Token: token, ExpiresAt: time.Unix(FixedNow+60, 0)}); err != nil {
			t.Fatalf("CreateJoinToken() error = %v", err)
		}
		const workers = 8
		results := make([]error, workers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range workers {
			wg.Go(func() {
				<-start
				_, results[i] = consumeJoinToken(ctx, s, token)
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for i, err := range results {
			switch {
			case err == nil:
				winners++
			case !errors.Is(err, datastore.ErrNotFound):
				t.Errorf("round %d worker %d: AttestNode(with token) error = %v, want nil or ErrNotFound", round, i, err)
			}
		}
		if winners != 1 {
			t.Errorf("round %d: %d of %d concurrent ConsumeJoinToken calls won, want exactly 1", round, winners, workers)
		}
	}
}

// consumeJoinToken attests the token's node with the token, consuming it.
func consumeJoinToken(ctx context.Context, s datastore.Store, token string) (*datastore.Node, error) {
	n := &datastore.Node{ID: id("/spire/agent/join_token/" + token), AttestationType: "join_token", CertSerial: "1"}
	return s.AttestNode(ctx, n, datastore.AttestCondition{JoinToken: token})
}

// testAttestNode: attestation creates a node or re-attests it (keeping its
// agent version), and consumes a join token in the same transaction: a
// refused attestation (banned node) leaves the token usable.
func testAttestNode(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	n := &datastore.Node{ID: id("/spire/agent/x509pop/reattest"), AttestationType: "x509pop", CertSerial: "1",
		CertNotAfter: FixedNow + 60, CanReattest: true, Selectors: sels("x509pop:subject:cn:a")}
	got, err := s.AttestNode(ctx, n, datastore.AttestCondition{})
	if err != nil {
		t.Fatalf("AttestNode(new) error = %v", err)
	}
	if diff := cmp.Diff(n, got, cmpOpts...); diff != "" {
		t.Errorf("AttestNode(new) (-want +got):\n%s", diff)
	}
	if _, err := s.SetNodeAgentVersion(ctx, n.ID, "1.0"); err != nil {
		t.Fatalf("SetNodeAgentVersion() error = %v", err)
	}
	again := *n
	again.CertSerial, again.NewCertSerial, again.Selectors = "2", "", sels("x509pop:subject:cn:b")
	got, err = s.AttestNode(ctx, &again, datastore.AttestCondition{})
	if err != nil {
		t.Fatalf("AttestNode(again) error = %v", err)
	}
	want := again
	want.AgentVersion = "1.0"
	if diff := cmp.Diff(&want, got, cmpOpts...); diff != "" {
		t.Errorf("AttestNode(again) (-want +got):\n%s", diff)
	}
	if _, err := s.BanNode(ctx, n.ID); err != nil {
		t.Fatalf("BanNode() error = %v", err)
	}
	if err := s.CreateJoinToken(ctx, &datastore.JoinToken{Token: "kept", ExpiresAt: time.Unix(FixedNow+60, 0)}); err != nil {
		t.Fatalf("CreateJoinToken() error = %v", err)
	}
	if _, err := s.AttestNode(ctx, &again, datastore.AttestCondition{JoinToken: "kept"}); !errors.Is(err, datastore.ErrBanned) {
		t.Errorf("AttestNode(banned, token) error = %v, want ErrBanned", err)
	}
	if _, err := s.FetchJoinToken(ctx, "kept"); err != nil {
		t.Errorf("FetchJoinToken() after a refused attestation error = %v, want the token kept", err)
	}

	// Trust on first use: a new node attests, an existing one is refused
	// and left as it was; once deleted (evicted) it attests again.
	first := &datastore.Node{ID: id("/spire/agent/aws_iid/111/us-east-1/i-1"), AttestationType: "aws_iid", CertSerial: "1",
		CertNotAfter: FixedNow + 60, Selectors: sels("aws_iid:az:us-east-1a")}
	if _, err := s.AttestNode(ctx, first, datastore.AttestCondition{FirstUse: true}); err != nil {
		t.Fatalf("AttestNode(first use, new) error = %v", err)
	}
	replay := *first
	replay.CertSerial, replay.Selectors = "2", sels("aws_iid:az:us-east-1b")
	if _, err := s.AttestNode(ctx, &replay, datastore.AttestCondition{FirstUse: true}); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Errorf("AttestNode(first use, existing) error = %v, want ErrAlreadyExists", err)
	}
	if got, err := s.FetchNode(ctx, first.ID); err != nil || got.CertSerial != "1" || len(got.Selectors) != 1 || got.Selectors[0].Value != "az:us-east-1a" {
		t.Errorf("after a refused first-use attestation the node is %+v, %v; want it unchanged", got, err)
	}
	if _, err := s.DeleteNode(ctx, first.ID); err != nil {
		t.Fatalf("DeleteNode() error = %v", err)
	}
	if _, err := s.AttestNode(ctx, &replay, datastore.AttestCondition{FirstUse: true}); err != nil {
		t.Errorf("AttestNode(first use, after eviction) error = %v", err)
	}
}

func testBundle(trustDomain spiffeid.TrustDomain) *datastore.Bundle {
	return &datastore.Bundle{
		TrustDomain:     trustDomain,
		X509Authorities: []datastore.X509Authority{{Cert: []byte{0x30, 0x01, 0x02}}, {Cert: []byte{0x30, 0x03}, Tainted: true}},
		JWTAuthorities:  []datastore.JWTAuthority{{KeyID: "k1", PublicKey: []byte{1, 2, 3}, ExpiresAt: FixedNow + 100, Tainted: true}},
		RefreshHint:     300,
		SequenceNumber:  7,
	}
}

func testBundles(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	if _, err := s.FetchBundle(ctx, td); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("FetchBundle(none) error = %v, want ErrNotFound", err)
	}
	if err := s.DeleteBundle(ctx, td); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("DeleteBundle(none) error = %v, want ErrNotFound", err)
	}
	want := testBundle(td)
	var seen []*datastore.Bundle
	got, err := s.UpdateBundle(ctx, td, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		seen = append(seen, cur)
		b := testBundle(spiffeid.TrustDomain{}) // the store fills in the trust domain
		return b, nil
	})
	if err != nil {
		t.Fatalf("UpdateBundle(create) error = %v", err)
	}
	if len(seen) != 1 || seen[0] != nil {
		t.Errorf("UpdateBundle(create) called fn with %v, want once with nil", seen)
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("UpdateBundle(create) returned (-want +got):\n%s", diff)
	}
	fetched, err := s.FetchBundle(ctx, td)
	if err != nil {
		t.Fatalf("FetchBundle() error = %v", err)
	}
	if diff := cmp.Diff(want, fetched, cmpOpts...); diff != "" {
		t.Errorf("FetchBundle() (-want +got):\n%s", diff)
	}

	// Modify: fn sees the stored bundle.
	got, err = s.UpdateBundle(ctx, td, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		if diff := cmp.Diff(want, cur, cmpOpts...); diff != "" {
			t.Errorf("UpdateBundle fn got (-want +got):\n%s", diff)
		}
		next := *cur
		next.SequenceNumber++
		next.X509Authorities = next.X509Authorities[:1]
		return &next, nil
	})
	if err != nil {
		t.Fatalf("UpdateBundle(modify) error = %v", err)
	}
	want.SequenceNumber = 8
	want.X509Authorities = want.X509Authorities[:1]
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("UpdateBundle(modify) returned (-want +got):\n%s", diff)
	}

	// A bundle for another trust domain is refused.
	if _, err := s.UpdateBundle(ctx, td, func(*datastore.Bundle) (*datastore.Bundle, error) {
		return testBundle(otherTD), nil
	}); err == nil {
		t.Errorf("UpdateBundle(fn returns another trust domain's bundle) error = nil, want an error")
	}

	other := testBundle(otherTD)
	if _, err := s.UpdateBundle(ctx, otherTD, func(*datastore.Bundle) (*datastore.Bundle, error) { return other, nil }); err != nil {
		t.Fatalf("UpdateBundle(other) error = %v", err)
	}
	list, err := s.ListBundles(ctx)
	if err != nil {
		t.Fatalf("ListBundles() error = %v", err)
	}
	wantList := []*datastore.Bundle{want, other}
	slices.SortFunc(list, func(a, b *datastore.Bundle) int { return compareStrings(a.TrustDomain.Name(), b.TrustDomain.Name()) })
	slices.SortFunc(wantList, func(a, b *datastore.Bundle) int { return compareStrings(a.TrustDomain.Name(), b.TrustDomain.Name()) })
	if diff := cmp.Diff(wantList, list, cmpOpts...); diff != "" {
		t.Errorf("ListBundles() (-want +got):\n%s", diff)
	}

	if err := s.DeleteBundle(ctx, otherTD); err != nil {
		t.Fatalf("DeleteBundle() error = %v", err)
	}
	if _, err := s.FetchBundle(ctx, otherTD); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("FetchBundle(deleted) error = %v, want ErrNotFound", err)
	}
	if _, err := s.FetchBundle(ctx, td); err != nil {
		t.Errorf("FetchBundle(%s) after deleting another error = %v", td, err)
	}
}

func testUpdateBundleUnchanged(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	if _, err := s.UpdateBundle(ctx, td, func(*datastore.Bundle) (*datastore.Bundle, error) { return testBundle(td), nil }); err != nil {
		t.Fatalf("UpdateBundle(create) error = %v", err)
	}
	// fn changes the bundle it was given in place but returns the same
	// pointer: by contract nothing is written.
	got, err := s.UpdateBundle(ctx, td, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		cur.SequenceNumber = 99
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateBundle(same pointer) error = %v", err)
	}
	if got == nil {
		t.Fatalf("UpdateBundle(same pointer) = nil, want the current bundle")
	}
	stored, err := s.FetchBundle(ctx, td)
	if err != nil {
		t.Fatalf("FetchBundle() error = %v", err)
	}
	if stored.SequenceNumber != 7 {
		t.Errorf("stored SequenceNumber = %d after fn returned its input, want 7 (nothing written)", stored.SequenceNumber)
	}
	// No bundle and fn returns nil: nothing created.
	got, err = s.UpdateBundle(ctx, otherTD, func(cur *datastore.Bundle) (*datastore.Bundle, error) { return cur, nil })
	if err != nil || got != nil {
		t.Errorf("UpdateBundle(none, fn returns nil) = %v, %v; want nil, nil", got, err)
	}
	if _, err := s.FetchBundle(ctx, otherTD); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("FetchBundle() after a no-op create error = %v, want ErrNotFound", err)
	}
}

func testUpdateBundleError(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	if _, err := s.UpdateBundle(ctx, td, func(*datastore.Bundle) (*datastore.Bundle, error) { return testBundle(td), nil }); err != nil {
		t.Fatalf("UpdateBundle(create) error = %v", err)
	}
	errBoom := errors.New("boom")
	_, err := s.UpdateBundle(ctx, td, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		next := *cur
		next.SequenceNumber = 100
		return &next, errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("UpdateBundle(fn fails) error = %v, want fn's error", err)
	}
	stored, err := s.FetchBundle(ctx, td)
	if err != nil || stored.SequenceNumber != 7 {
		t.Errorf("FetchBundle() after failed update = %v, %v; want sequence 7 unchanged", stored, err)
	}
}

// appendJWTAuthority returns an UpdateBundle function adding key kid.
func appendJWTAuthority(kid string) func(*datastore.Bundle) (*datastore.Bundle, error) {
	return func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		next := &datastore.Bundle{}
		if cur != nil {
			c := *cur
			next = &c
		}
		next.JWTAuthorities = append(slices.Clone(next.JWTAuthorities), datastore.JWTAuthority{KeyID: kid, PublicKey: []byte(kid)})
		next.SequenceNumber++
		return next, nil
	}
}

// concurrentAppends runs one UpdateBundle per key, each on stores[i %
// len(stores)], all at once, starting with no bundle, and checks that every
// key is present afterwards.
func concurrentAppends(t *testing.T, stores []datastore.Store, workers int) {
	ctx := testContext(t)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, workers)
	for i := range workers {
		s := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			_, errs[i] = s.UpdateBundle(ctx, td, appendJWTAuthority(fmt.Sprintf("key-%d", i)))
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent UpdateBundle error = %v", err)
	}
	b, err := stores[0].FetchBundle(ctx, td)
	if err != nil {
		t.Fatalf("FetchBundle() error = %v", err)
	}
	var got, want []string
	for _, a := range b.JWTAuthorities {
		got = append(got, a.KeyID)
	}
	for i := range workers {
		want = append(want, fmt.Sprintf("key-%d", i))
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JWT authorities after %d concurrent appends (-want +got):\n%s", workers, diff)
	}
	if b.SequenceNumber != uint64(workers) {
		t.Errorf("SequenceNumber = %d, want %d (one increment per update)", b.SequenceNumber, workers)
	}
}

func testConcurrentUpdateBundle(t *testing.T, s datastore.Store) {
	concurrentAppends(t, []datastore.Store{s}, 8)
}

func testFederationRelationships(t *testing.T, s datastore.Store) {
	ctx := testContext(t)
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	web := spiffeid.RequireTrustDomainFromString("web.test")
	spiffeRel := &datastore.FederationRelationship{TrustDomain: partner, BundleEndpointURL: "https://partner.test:8443",
		Profile: "https_spiffe", EndpointSPIFFEID: spiffeid.RequireFromPath(partner, "/spire/server")}
	webRel := &datastore.FederationRelationship{TrustDomain: web, BundleEndpointURL: "https://web.test/bundle", Profile: "https_web"}
	for _, r := range []*datastore.FederationRelationship{webRel, spiffeRel} {
		if err := s.CreateFederationRelationship(ctx, r); err != nil {
			t.Fatalf("CreateFederationRelationship(%s) error = %v", r.TrustDomain, err)
		}
	}
	if err := s.CreateFederationRelationship(ctx, webRel); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Errorf("CreateFederationRelationship(again) error = %v, want ErrAlreadyExists", err)
	}
	got, err := s.FetchFederationRelationship(ctx, partner)
	if err != nil || *got != *spiffeRel {
		t.Errorf("FetchFederationRelationship(partner) = %+v, %v; want %+v", got, err, spiffeRel)
	}
	list, err := s.ListFederationRelationships(ctx)
	if err != nil || len(list) != 2 || list[0].TrustDomain != partner || list[1].TrustDomain != web {
		t.Errorf("ListFederationRelationships() = %v, %v; want partner.test then web.test", list, err)
	}
	boom := errors.New("refused")
	if _, err := s.UpdateFederationRelationship(ctx, web, func(*datastore.FederationRelationship) (*datastore.FederationRelationship, error) {
		return nil, boom
	}); !errors.Is(err, boom) {
		t.Errorf("UpdateFederationRelationship(fn fails) error = %v, want %v", err, boom)
	}
	upd, err := s.UpdateFederationRelationship(ctx, web, func(cur *datastore.FederationRelationship) (*datastore.FederationRelationship, error) {
		if cur.BundleEndpointURL != webRel.BundleEndpointURL {
			t.Errorf("UpdateFederationRelationship handed fn %+v, want the stored one", cur)
		}
		cur.BundleEndpointURL = "https://web.test/v2"
		cur.TrustDomain = partner // ignored: the trust domain is the key
		return cur, nil
	})
	if err != nil || upd.BundleEndpointURL != "https://web.test/v2" || upd.TrustDomain != web {
		t.Errorf("UpdateFederationRelationship() = %+v, %v; want the new URL for web.test", upd, err)
	}
	if got, _ := s.FetchFederationRelationship(ctx, partner); got == nil || *got != *spiffeRel {
		t.Errorf("partner.test after updating web.test = %+v, want unchanged", got)
	}
	if err := s.DeleteFederationRelationship(ctx, web); err != nil {
		t.Fatalf("DeleteFederationRelationship() error = %v", err)
	}
	for name, call := range map[string]func() error{
		"Fetch":  func() error { _, err := s.FetchFederationRelationship(ctx, web); return err },
		"Delete": func() error { return s.DeleteFederationRelationship(ctx, web) },
		"Update": func() error {
			_, err := s.UpdateFederationRelationship(ctx, web, func(r *datastore.FederationRelationship) (*datastore.FederationRelationship, error) { return r, nil })
			return err
		},
	} {
		if err := call(); !errors.Is(err, datastore.ErrNotFound) {
			t.Errorf("%sFederationRelationship(deleted) error = %v, want ErrNotFound", name, err)
		}
	}
}
