package admin_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/arborid/arbor/internal/cli/admin"
)

func sid(path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: "example.org", Path: path} }

func TestEntrySpec(t *testing.T) {
	tests := []struct {
		name    string
		spec    admin.EntrySpec
		want    *types.Entry
		wantErr string
	}{
		{
			name: "full",
			spec: admin.EntrySpec{
				EntryID: "e1", ParentID: "spiffe://example.org/host", SPIFFEID: "spiffe://example.org/web",
				Selectors: []string{"unix:uid:1000", "k8s:ns:a:b"}, X509SVIDTTL: 60, JWTSVIDTTL: 30,
				DNSNames: []string{"web.example.org"}, FederatesWith: []string{"spiffe://partner.example"},
				Admin: true, Downstream: true, StoreSVID: true, EntryExpiry: 1700000000, Hint: "h",
			},
			want: &types.Entry{
				Id: "e1", ParentId: sid("/host"), SpiffeId: sid("/web"),
				Selectors:   []*types.Selector{{Type: "unix", Value: "uid:1000"}, {Type: "k8s", Value: "ns:a:b"}},
				X509SvidTtl: 60, JwtSvidTtl: 30, DnsNames: []string{"web.example.org"}, FederatesWith: []string{"partner.example"},
				Admin: true, Downstream: true, StoreSvid: true, ExpiresAt: 1700000000, Hint: "h",
			},
		},
		{
			name: "node entry",
			spec: admin.EntrySpec{Node: true, SPIFFEID: "spiffe://example.org/host", Selectors: []string{"x509pop:subject:cn:a"}},
			want: &types.Entry{
				ParentId: sid("/spire/server"), SpiffeId: sid("/host"),
				Selectors: []*types.Selector{{Type: "x509pop", Value: "subject:cn:a"}}, FederatesWith: []string{},
			},
		},
		{name: "no spiffe id", spec: admin.EntrySpec{ParentID: "spiffe://example.org/a", Selectors: []string{"a:b"}}, wantErr: "--spiffe-id is required"},
		{name: "no parent", spec: admin.EntrySpec{SPIFFEID: "spiffe://example.org/a", Selectors: []string{"a:b"}}, wantErr: "--parent-id is required"},
		{name: "node and parent", spec: admin.EntrySpec{Node: true, ParentID: "spiffe://example.org/p", SPIFFEID: "spiffe://example.org/a", Selectors: []string{"a:b"}}, wantErr: "mutually exclusive"},
		{name: "no selector", spec: admin.EntrySpec{ParentID: "spiffe://example.org/p", SPIFFEID: "spiffe://example.org/a"}, wantErr: "at least one --selector"},
		{name: "bad selector", spec: admin.EntrySpec{ParentID: "spiffe://example.org/p", SPIFFEID: "spiffe://example.org/a", Selectors: []string{"nocolon"}}, wantErr: "--selector"},
		{name: "bad spiffe id", spec: admin.EntrySpec{ParentID: "spiffe://example.org/p", SPIFFEID: "http://x/a", Selectors: []string{"a:b"}}, wantErr: "--spiffe-id"},
		{name: "bad federation", spec: admin.EntrySpec{ParentID: "spiffe://example.org/p", SPIFFEID: "spiffe://example.org/a", Selectors: []string{"a:b"}, FederatesWith: []string{"Bad TD"}}, wantErr: "--federates-with"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.spec.Entry()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Entry() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Entry(): %v", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform(), protocmp.IgnoreEmptyMessages()); diff != "" {
				t.Errorf("Entry() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseEntryData(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []*types.Entry
		wantErr string
	}{
		{
			name: "spire-server format",
			in: `{"entries": [{"selectors": [{"type": "unix", "value": "uid:111"}], "spiffe_id": "spiffe://example.org/Blog",
				"parent_id": "spiffe://example.org/spire/agent/join_token/TokenBlog", "x509_svid_ttl": 200, "jwt_svid_ttl": 30,
				"admin": true, "entry_id": "id-1", "entryExpiry": 1700000000, "dns_names": ["blog"], "federates_with": ["partner.example"]},
				{"selectors": [{"type": "unix", "value": "uid:1"}], "spiffe_id": "spiffe://example.org/db", "parent_id": "spiffe://example.org/host", "ttl": 60}]}`,
			want: []*types.Entry{
				{Id: "id-1", SpiffeId: sid("/Blog"), ParentId: sid("/spire/agent/join_token/TokenBlog"),
					Selectors: []*types.Selector{{Type: "unix", Value: "uid:111"}}, X509SvidTtl: 200, JwtSvidTtl: 30,
					Admin: true, ExpiresAt: 1700000000, DnsNames: []string{"blog"}, FederatesWith: []string{"partner.example"}},
				{SpiffeId: sid("/db"), ParentId: sid("/host"), Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}}, X509SvidTtl: 60},
			},
		},
		{
			name: "protojson of types.Entry",
			in:   `{"entries": [{"id": "x", "spiffeId": {"trustDomain": "example.org", "path": "/a"}, "parent_id": {"trust_domain": "example.org", "path": "/p"}, "selectors": [{"type": "a", "value": "b"}], "hint": "h", "expires_at": "5"}]}`,
			want: []*types.Entry{{Id: "x", SpiffeId: sid("/a"), ParentId: sid("/p"), Selectors: []*types.Selector{{Type: "a", Value: "b"}}, Hint: "h", ExpiresAt: 5}},
		},
		{name: "unknown entry field", in: `{"entries": [{"spiffe_id": "spiffe://example.org/a", "colour": "red"}]}`, wantErr: `entry 1: `},
		{name: "unknown top-level field", in: `{"entry": []}`, wantErr: "want {\"entries\""},
		{name: "empty", in: `{"entries": []}`, wantErr: "no entries"},
		{name: "bad id", in: `{"entries": [{"spiffe_id": "example.org/a"}]}`, wantErr: `spiffe_id "example.org/a"`},
		{name: "not json", in: `entries:`, wantErr: "want {\"entries\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := admin.ParseEntryData(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseEntryData() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEntryData(): %v", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("ParseEntryData() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadEntryIDs(t *testing.T) {
	got, err := admin.ReadEntryIDs(strings.NewReader(`{"ids": ["a", "b"]}`))
	if err != nil || !cmp.Equal(got, []string{"a", "b"}) {
		t.Errorf("ReadEntryIDs = %v, %v; want [a b]", got, err)
	}
	for _, in := range []string{`{"ids": []}`, `{"id": ["a"]}`, `["a"]`} {
		if _, err := admin.ReadEntryIDs(strings.NewReader(in)); err == nil {
			t.Errorf("ReadEntryIDs(%s) = nil error, want one", in)
		}
	}
}

func mustEntry(t *testing.T, s admin.EntrySpec) *types.Entry {
	t.Helper()
	e, err := s.Entry()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEntryRoundTrip(t *testing.T) {
	_, socket := startServer(t)
	c := dial(t, socket)
	ctx := testContext(t)
	var o outputs
	web := admin.EntrySpec{ParentID: "spiffe://example.org/host", SPIFFEID: "spiffe://example.org/web",
		Selectors: []string{"unix:uid:1000"}, X509SVIDTTL: 600, DNSNames: []string{"web.example.org"}}
	db := admin.EntrySpec{ParentID: "spiffe://example.org/host", SPIFFEID: "spiffe://example.org/db",
		Selectors: []string{"unix:uid:1001", "unix:gid:50"}, Hint: "db"}

	// Create two entries: both printed as blocks.
	if err := c.CreateEntries(ctx, o.printer(admin.FormatPretty), []*types.Entry{mustEntry(t, web), mustEntry(t, db)}); err != nil {
		t.Fatalf("CreateEntries: %v (stderr %q)", err, o.err.String())
	}
	for _, want := range []string{"SPIFFE ID        : spiffe://example.org/web", "X509-SVID TTL    : 600", "DNS name         : web.example.org",
		"SPIFFE ID        : spiffe://example.org/db", "Selector         : unix:gid:50", "Hint             : db"} {
		if !strings.Contains(o.out.String(), want) {
			t.Errorf("CreateEntries printed\n%s\nwant a line %q", o.out.String(), want)
		}
	}

	// A duplicate fails per item: one line on Err, a BatchError, the new one created.
	other := admin.EntrySpec{ParentID: "spiffe://example.org/host", SPIFFEID: "spiffe://example.org/other", Selectors: []string{"unix:uid:7"}}
	err := c.CreateEntries(ctx, o.printer(admin.FormatPretty), []*types.Entry{mustEntry(t, web), mustEntry(t, other)})
	var be *admin.BatchError
	if !errors.As(err, &be) || be.Failed != 1 || be.Total != 2 {
		t.Fatalf("CreateEntries(duplicate) = %v, want BatchError 1 of 2", err)
	}
	if lines := strings.Split(strings.TrimSpace(o.err.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "entry 1") || !strings.Contains(lines[0], "(AlreadyExists)") {
		t.Errorf("CreateEntries(duplicate) stderr = %q, want one AlreadyExists line for entry 1", o.err.String())
	}
	if !strings.Contains(o.out.String(), "spiffe://example.org/other") {
		t.Errorf("CreateEntries(duplicate) stdout = %q, want the created entry", o.out.String())
	}

	// Show everything, as JSON, and parse it.
	if err := c.ShowEntries(ctx, o.printer(admin.FormatJSON), admin.EntryFilter{}); err != nil {
		t.Fatalf("ShowEntries: %v", err)
	}
	var list entryv1.ListEntriesResponse
	if err := protojson.Unmarshal(o.out.Bytes(), &list); err != nil {
		t.Fatalf("ShowEntries JSON %q does not parse: %v", o.out.String(), err)
	}
	var ids []string
	for _, e := range list.Entries {
		ids = append(ids, idOf(e))
	}
	if want := []string{"spiffe://example.org/db", "spiffe://example.org/other", "spiffe://example.org/web"}; !cmp.Equal(ids, want) {
		t.Errorf("ShowEntries listed %v, want %v (sorted by SPIFFE ID)", ids, want)
	}
	webID := list.Entries[2].Id

	// Filters.
	filters := []struct {
		name string
		f    admin.EntryFilter
		want string
	}{
		{"by spiffe id", admin.EntryFilter{SPIFFEID: "spiffe://example.org/web"}, "Found 1 entry\n"},
		{"by parent", admin.EntryFilter{ParentID: "spiffe://example.org/host"}, "Found 3 entries\n"},
		{"selector superset", admin.EntryFilter{Selectors: []string{"unix:uid:1001"}}, "Found 1 entry\n"},
		{"selector exact miss", admin.EntryFilter{Selectors: []string{"unix:uid:1001"}, MatchSelectors: "exact"}, "Found 0 entries\n"},
		{"selector any", admin.EntryFilter{Selectors: []string{"unix:uid:1001", "unix:uid:7"}, MatchSelectors: "any"}, "Found 2 entries\n"},
		{"hint", admin.EntryFilter{Hint: "db"}, "Found 1 entry\n"},
		{"downstream", admin.EntryFilter{Downstream: true}, "Found 0 entries\n"},
		{"by id", admin.EntryFilter{EntryID: webID}, "Found 1 entry\n"},
	}
	for _, tt := range filters {
		if err := c.ShowEntries(ctx, o.printer(admin.FormatPretty), tt.f); err != nil {
			t.Errorf("ShowEntries(%s): %v", tt.name, err)
			continue
		}
		if !strings.HasPrefix(o.out.String(), tt.want) {
			t.Errorf("ShowEntries(%s) printed %q, want it to start with %q", tt.name, o.out.String(), tt.want)
		}
	}
	if err := c.ShowEntries(ctx, o.printer(admin.FormatPretty), admin.EntryFilter{Selectors: []string{"a:b"}, MatchSelectors: "most"}); err == nil {
		t.Error("ShowEntries(--match most) = nil error, want one")
	}
	err = c.ShowEntries(ctx, o.printer(admin.FormatPretty), admin.EntryFilter{EntryID: "missing"})
	var re *admin.RPCError
	checkOneLine(t, err)
	if !errors.As(err, &re) || re.Code != codes.NotFound || !strings.HasSuffix(err.Error(), "(NotFound)") {
		t.Errorf("ShowEntries(missing ID) = %v, want an RPCError NotFound", err)
	}

	// Update replaces every field.
	upd := web
	upd.EntryID = webID
	upd.Selectors = []string{"unix:uid:2000"}
	upd.DNSNames = nil
	if err := c.UpdateEntries(ctx, o.printer(admin.FormatPretty), []*types.Entry{mustEntry(t, upd)}); err != nil {
		t.Fatalf("UpdateEntries: %v (stderr %q)", err, o.err.String())
	}
	got, err := c.ListEntries(ctx, admin.EntryFilter{EntryID: webID})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*types.Selector{{Type: "unix", Value: "uid:2000"}}, got[0].Selectors, protocmp.Transform()); diff != "" || len(got[0].DnsNames) != 0 || got[0].RevisionNumber != 1 {
		t.Errorf("after update: selectors diff %s, dns %v, revision %d; want uid:2000, none, 1", diff, got[0].DnsNames, got[0].RevisionNumber)
	}
	missing := upd
	missing.EntryID = "missing"
	if err := c.UpdateEntries(ctx, o.printer(admin.FormatPretty), []*types.Entry{mustEntry(t, missing)}); !errors.As(err, &be) || !strings.Contains(o.err.String(), "(NotFound)") {
		t.Errorf("UpdateEntries(missing) = %v, stderr %q; want a BatchError and a NotFound line", err, o.err.String())
	}
	if err := c.UpdateEntries(ctx, o.printer(admin.FormatPretty), []*types.Entry{mustEntry(t, web)}); err == nil {
		t.Error("UpdateEntries(no ID) = nil error, want one")
	}

	// Count, then delete one (plus a missing one) and count again.
	if err := c.CountEntries(ctx, o.printer(admin.FormatPretty), admin.EntryFilter{}); err != nil || o.out.String() != "3 registration entries\n" {
		t.Errorf("CountEntries = %v, printed %q; want 3 registration entries", err, o.out.String())
	}
	if err := c.CountEntries(ctx, o.printer(admin.FormatJSON), admin.EntryFilter{Hint: "db"}); err != nil {
		t.Fatalf("CountEntries(json): %v", err)
	}
	var count entryv1.CountEntriesResponse
	if err := protojson.Unmarshal(o.out.Bytes(), &count); err != nil || count.Count != 1 {
		t.Errorf("CountEntries(hint db, json) = %q (%v), want count 1", o.out.String(), err)
	}
	err = c.DeleteEntries(ctx, o.printer(admin.FormatPretty), []string{webID, "missing"})
	if !errors.As(err, &be) || be.Failed != 1 {
		t.Errorf("DeleteEntries(one missing) = %v, want BatchError with 1 failure", err)
	}
	if o.out.String() != "Deleted entry "+webID+"\n" || !strings.Contains(o.err.String(), "entry missing") {
		t.Errorf("DeleteEntries printed %q / %q", o.out.String(), o.err.String())
	}
	if err := c.CountEntries(ctx, o.printer(admin.FormatPretty), admin.EntryFilter{}); err != nil || o.out.String() != "2 registration entries\n" {
		t.Errorf("CountEntries after delete = %v, printed %q; want 2 registration entries", err, o.out.String())
	}
}

func idOf(e *types.Entry) string { return "spiffe://" + e.SpiffeId.TrustDomain + e.SpiffeId.Path }
