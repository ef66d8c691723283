package admin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/selector"
)

// EntrySpec is a registration entry as given on the command line; Entry
// validates it and builds the API message.
type EntrySpec struct {
	EntryID  string
	ParentID string
	SPIFFEID string
	// Node makes the entry a node entry: its parent is the server,
	// spiffe://<trust domain>/spire/server.
	Node          bool
	Selectors     []string
	X509SVIDTTL   int32 // seconds; zero: the server's default
	JWTSVIDTTL    int32 // seconds; zero: the server's default
	DNSNames      []string
	FederatesWith []string
	Admin         bool
	Downstream    bool
	StoreSVID     bool
	// EntryExpiry is the entry's expiry in Unix seconds; zero: never.
	EntryExpiry int64
	Hint        string
}

// Entry validates s and returns the entry message.
func (s EntrySpec) Entry() (*types.Entry, error) {
	if s.SPIFFEID == "" {
		return nil, errors.New("--spiffe-id is required")
	}
	id, err := spiffeid.FromString(s.SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("--spiffe-id %q: %v", s.SPIFFEID, err)
	}
	var parent spiffeid.ID
	switch {
	case s.Node && s.ParentID != "":
		return nil, errors.New("--node and --parent-id are mutually exclusive (a node entry's parent is the server)")
	case s.Node:
		parent = idpolicy.ServerID(id.TrustDomain())
	case s.ParentID == "":
		return nil, errors.New("--parent-id is required (or --node for a node entry)")
	default:
		parent, err = spiffeid.FromString(s.ParentID)
		if err != nil {
			return nil, fmt.Errorf("--parent-id %q: %v", s.ParentID, err)
		}
	}
	if len(s.Selectors) == 0 {
		return nil, errors.New("at least one --selector type:value is required")
	}
	sels, err := parseSelectors(s.Selectors)
	if err != nil {
		return nil, err
	}
	if s.X509SVIDTTL < 0 || s.JWTSVIDTTL < 0 {
		return nil, errors.New("SVID TTLs must not be negative")
	}
	if s.EntryExpiry < 0 {
		return nil, errors.New("--entry-expiry must not be negative")
	}
	for _, td := range s.FederatesWith {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil {
			return nil, fmt.Errorf("--federates-with %q: %v", td, err)
		}
	}
	return &types.Entry{
		Id:            s.EntryID,
		SpiffeId:      idProto(id),
		ParentId:      idProto(parent),
		Selectors:     sels,
		X509SvidTtl:   s.X509SVIDTTL,
		JwtSvidTtl:    s.JWTSVIDTTL,
		DnsNames:      s.DNSNames,
		FederatesWith: trustDomainNames(s.FederatesWith),
		Admin:         s.Admin,
		Downstream:    s.Downstream,
		StoreSvid:     s.StoreSVID,
		ExpiresAt:     s.EntryExpiry,
		Hint:          s.Hint,
	}, nil
}

func trustDomainNames(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		td, err := spiffeid.TrustDomainFromString(s)
		if err != nil {
			out = append(out, s)
			continue
		}
		out = append(out, td.Name())
	}
	return out
}

func idProto(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// parseSPIFFEID parses a SPIFFE ID given by flag.
func parseSPIFFEID(flag, s string) (*types.SPIFFEID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %v", flag, s, err)
	}
	return idProto(id), nil
}

func idString(p *types.SPIFFEID) string {
	if p == nil {
		return ""
	}
	return "spiffe://" + p.TrustDomain + p.Path
}

func parseSelectors(in []string) ([]*types.Selector, error) {
	out := make([]*types.Selector, 0, len(in))
	for _, s := range in {
		sel, err := selector.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("--selector: %v", err)
		}
		out = append(out, &types.Selector{Type: sel.Type, Value: sel.Value})
	}
	return out, nil
}

// ParseSeconds parses a TTL flag: whole seconds ("3600", as spire-server
// takes it) or a Go duration ("1h").
func ParseSeconds(s string) (int32, error) {
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%q is negative", s)
		}
		return int32(n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither seconds nor a duration like 1h30m", s)
	}
	if d < 0 || d%time.Second != 0 || d > time.Duration(1<<31-1)*time.Second {
		return 0, fmt.Errorf("%q is not a whole, non-negative number of seconds", s)
	}
	return int32(d / time.Second), nil
}

// ParseUnixTime parses an expiry flag: Unix seconds (as spire-server takes
// it) or an RFC 3339 time.
func ParseUnixTime(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%q is negative", s)
		}
		return n, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither Unix seconds nor an RFC 3339 time", s)
	}
	return t.Unix(), nil
}

// ParseEntryData reads a batch of entries: a JSON object {"entries": [...]}
// in spire-server's -data format, where spiffe_id and parent_id are strings
// and entry_id, entryExpiry and ttl are accepted, or in the protojson form of
// spire.api.types.Entry (IDs as {"trust_domain", "path"} objects).
func ParseEntryData(r io.Reader) ([]*types.Entry, error) {
	var doc struct {
		Entries []map[string]json.RawMessage `json:"entries"`
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("entry data: want {\"entries\": [...]}: %v", err)
	}
	if len(doc.Entries) == 0 {
		return nil, errors.New("entry data: no entries")
	}
	out := make([]*types.Entry, 0, len(doc.Entries))
	for i, fields := range doc.Entries {
		e, err := entryFromJSON(fields)
		if err != nil {
			return nil, fmt.Errorf("entry data: entry %d: %v", i+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// spireFieldNames maps spire-server's -data field names to types.Entry's.
var spireFieldNames = map[string]string{
	"entry_id":    "id",
	"entryId":     "id",
	"entryExpiry": "expires_at",
	"ttl":         "x509_svid_ttl",
}

func entryFromJSON(fields map[string]json.RawMessage) (*types.Entry, error) {
	norm := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		if to, ok := spireFieldNames[k]; ok {
			k = to
		}
		if _, dup := norm[k]; dup {
			return nil, fmt.Errorf("field %q given twice", k)
		}
		switch k {
		case "spiffe_id", "spiffeId", "parent_id", "parentId":
			if s := bytes.TrimSpace(v); len(s) > 0 && s[0] == '"' {
				var str string
				if err := json.Unmarshal(s, &str); err != nil {
					return nil, fmt.Errorf("%s: %v", k, err)
				}
				id, err := spiffeid.FromString(str)
				if err != nil {
					return nil, fmt.Errorf("%s %q: %v", k, str, err)
				}
				v, _ = json.Marshal(map[string]string{"trust_domain": id.TrustDomain().Name(), "path": id.Path()})
			}
		}
		norm[k] = v
	}
	raw, err := json.Marshal(norm)
	if err != nil {
		return nil, err
	}
	e := &types.Entry{}
	if err := protojson.Unmarshal(raw, e); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "proto: "))
	}
	return e, nil
}

// ReadEntryIDs reads entry IDs for a batch delete: a JSON object
// {"ids": [...]} as spire-server's entry delete -file takes it.
func ReadEntryIDs(r io.Reader) ([]string, error) {
	var doc struct {
		IDs []string `json:"ids"`
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("entry ID file: want {\"ids\": [...]}: %v", err)
	}
	if len(doc.IDs) == 0 {
		return nil, errors.New("entry ID file: no IDs")
	}
	return doc.IDs, nil
}

// CreateEntries creates entries and prints each created entry; failures are
// printed one per line and make it return a *BatchError.
func (c *Client) CreateEntries(ctx context.Context, p Printer, entries []*types.Entry) error {
	const op = "entry create"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.entry.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries})
	if err != nil {
		return c.rpcError(op, err)
	}
	failed := 0
	var created []*types.Entry
	for i, r := range resp.Results {
		if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
			failed++
			var in *types.Entry
			if i < len(entries) {
				in = entries[i]
			}
			msg := fmt.Sprintf("%s: entry %d (%s): %s (%s)", op, i+1, describeEntry(in), r.GetStatus().GetMessage(), code)
			if code == codes.AlreadyExists && r.Entry.GetId() != "" {
				msg += ": existing entry " + r.Entry.GetId()
			}
			fmt.Fprintln(p.errw(), msg)
			continue
		}
		created = append(created, r.Entry)
	}
	if p.JSON() {
		if err := p.printJSON(resp); err != nil {
			return err
		}
	} else {
		for _, e := range created {
			printEntry(p.Out, e)
		}
	}
	if failed > 0 {
		return &BatchError{Op: op, Failed: failed, Total: len(resp.Results), Noun: "entries"}
	}
	return nil
}

// UpdateEntries replaces entries (every field, as spire-server does) by ID.
func (c *Client) UpdateEntries(ctx context.Context, p Printer, entries []*types.Entry) error {
	const op = "entry update"
	for i, e := range entries {
		if e.GetId() == "" {
			return fmt.Errorf("%s: entry %d has no ID (--entry-id)", op, i+1)
		}
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.entry.BatchUpdateEntry(ctx, &entryv1.BatchUpdateEntryRequest{Entries: entries})
	if err != nil {
		return c.rpcError(op, err)
	}
	failed := 0
	var updated []*types.Entry
	for i, r := range resp.Results {
		if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
			failed++
			id := ""
			if i < len(entries) {
				id = entries[i].GetId()
			}
			fmt.Fprintf(p.errw(), "%s: entry %s: %s (%s)\n", op, id, r.GetStatus().GetMessage(), code)
			continue
		}
		updated = append(updated, r.Entry)
	}
	if p.JSON() {
		if err := p.printJSON(resp); err != nil {
			return err
		}
	} else {
		for _, e := range updated {
			printEntry(p.Out, e)
		}
	}
	if failed > 0 {
		return &BatchError{Op: op, Failed: failed, Total: len(resp.Results), Noun: "entries"}
	}
	return nil
}

// DeleteEntries deletes entries by ID.
func (c *Client) DeleteEntries(ctx context.Context, p Printer, ids []string) error {
	const op = "entry delete"
	if len(ids) == 0 {
		return fmt.Errorf("%s: no entry IDs given (--entry-id or --file)", op)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.entry.BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: ids})
	if err != nil {
		return c.rpcError(op, err)
	}
	failed := 0
	var deleted []string
	for _, r := range resp.Results {
		if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
			failed++
			fmt.Fprintf(p.errw(), "%s: entry %s: %s (%s)\n", op, r.Id, r.GetStatus().GetMessage(), code)
			continue
		}
		deleted = append(deleted, r.Id)
	}
	if p.JSON() {
		if err := p.printJSON(resp); err != nil {
			return err
		}
	} else {
		for _, id := range deleted {
			fmt.Fprintf(p.Out, "Deleted entry %s\n", id)
		}
	}
	if failed > 0 {
		return &BatchError{Op: op, Failed: failed, Total: len(resp.Results), Noun: "entries"}
	}
	return nil
}

func describeEntry(e *types.Entry) string {
	if e == nil {
		return "?"
	}
	return fmt.Sprintf("spiffe ID %s, parent %s", idString(e.SpiffeId), idString(e.ParentId))
}

// EntryFilter selects entries for show and count. Zero fields do not filter.
type EntryFilter struct {
	// EntryID fetches one entry; the other fields are then ignored.
	EntryID  string
	SPIFFEID string
	ParentID string
	// Selectors match according to MatchSelectors: exact, subset,
	// superset (default, as spire-server) or any.
	Selectors      []string
	MatchSelectors string
	// FederatesWith matches according to MatchFederatesWith (same values).
	FederatesWith      []string
	MatchFederatesWith string
	Hint               string
	// Downstream, when true, selects only downstream entries.
	Downstream bool
}

func (f EntryFilter) isZero() bool {
	return f.SPIFFEID == "" && f.ParentID == "" && len(f.Selectors) == 0 && len(f.FederatesWith) == 0 && f.Hint == "" && !f.Downstream
}

// parseMatch maps a match behaviour name to the enum value shared (in
// numbering) by SelectorMatch and FederatesWithMatch.
func parseMatch(flag, s string) (int32, error) {
	switch strings.ToLower(s) {
	case "exact":
		return int32(types.SelectorMatch_MATCH_EXACT), nil
	case "subset":
		return int32(types.SelectorMatch_MATCH_SUBSET), nil
	case "", "superset":
		return int32(types.SelectorMatch_MATCH_SUPERSET), nil
	case "any":
		return int32(types.SelectorMatch_MATCH_ANY), nil
	}
	return 0, fmt.Errorf("%s %q: want exact, subset, superset or any", flag, s)
}

// listFilter builds the API filter (nil when f filters nothing).
func (f EntryFilter) listFilter() (*entryv1.ListEntriesRequest_Filter, error) {
	if f.isZero() {
		return nil, nil
	}
	out := &entryv1.ListEntriesRequest_Filter{}
	var err error
	if f.SPIFFEID != "" {
		if out.BySpiffeId, err = parseSPIFFEID("--spiffe-id", f.SPIFFEID); err != nil {
			return nil, err
		}
	}
	if f.ParentID != "" {
		if out.ByParentId, err = parseSPIFFEID("--parent-id", f.ParentID); err != nil {
			return nil, err
		}
	}
	if len(f.Selectors) > 0 {
		sels, err := parseSelectors(f.Selectors)
		if err != nil {
			return nil, err
		}
		m, err := parseMatch("--match", f.MatchSelectors)
		if err != nil {
			return nil, err
		}
		out.BySelectors = &types.SelectorMatch{Selectors: sels, Match: types.SelectorMatch_MatchBehavior(m)}
	}
	if len(f.FederatesWith) > 0 {
		for _, td := range f.FederatesWith {
			if _, err := spiffeid.TrustDomainFromString(td); err != nil {
				return nil, fmt.Errorf("--federates-with %q: %v", td, err)
			}
		}
		m, err := parseMatch("--match-federates-with", f.MatchFederatesWith)
		if err != nil {
			return nil, err
		}
		out.ByFederatesWith = &types.FederatesWithMatch{TrustDomains: trustDomainNames(f.FederatesWith), Match: types.FederatesWithMatch_MatchBehavior(m)}
	}
	if f.Hint != "" {
		out.ByHint = wrapperspb.String(f.Hint)
	}
	if f.Downstream {
		out.ByDownstream = wrapperspb.Bool(true)
	}
	return out, nil
}

// ListEntries returns every entry matching f, paging through ListEntries,
// sorted by SPIFFE ID, parent ID and entry ID.
func (c *Client) ListEntries(ctx context.Context, f EntryFilter) ([]*types.Entry, error) {
	const op = "entry show"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if f.EntryID != "" {
		e, err := c.entry.GetEntry(ctx, &entryv1.GetEntryRequest{Id: f.EntryID})
		if err != nil {
			return nil, c.rpcError(op, err)
		}
		return []*types.Entry{e}, nil
	}
	filter, err := f.listFilter()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var all []*types.Entry
	token := ""
	for {
		resp, err := c.entry.ListEntries(ctx, &entryv1.ListEntriesRequest{Filter: filter, PageSize: pageSize, PageToken: token})
		if err != nil {
			return nil, c.rpcError(op, err)
		}
		all = append(all, resp.Entries...)
		if resp.NextPageToken == "" {
			break
		}
		if resp.NextPageToken == token {
			return nil, fmt.Errorf("%s: the server returned the same page token %q twice", op, token)
		}
		token = resp.NextPageToken
	}
	slices.SortStableFunc(all, func(a, b *types.Entry) int {
		return cmp.Or(
			strings.Compare(idString(a.SpiffeId), idString(b.SpiffeId)),
			strings.Compare(idString(a.ParentId), idString(b.ParentId)),
			strings.Compare(a.Id, b.Id))
	})
	return all, nil
}

// ShowEntries prints the entries matching f: "Found N entries" and a block
// per entry, or with JSON a ListEntriesResponse holding all of them.
func (c *Client) ShowEntries(ctx context.Context, p Printer, f EntryFilter) error {
	entries, err := c.ListEntries(ctx, f)
	if err != nil {
		return err
	}
	if p.JSON() {
		return p.printJSON(&entryv1.ListEntriesResponse{Entries: entries})
	}
	fmt.Fprintf(p.Out, "Found %s\n\n", plural(len(entries), "entry", "entries"))
	for _, e := range entries {
		printEntry(p.Out, e)
	}
	return nil
}

// CountEntries prints how many entries match f.
func (c *Client) CountEntries(ctx context.Context, p Printer, f EntryFilter) error {
	const op = "entry count"
	filter, err := f.listFilter()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req := &entryv1.CountEntriesRequest{}
	if filter != nil {
		req.Filter = &entryv1.CountEntriesRequest_Filter{
			BySpiffeId: filter.BySpiffeId, ByParentId: filter.ByParentId, BySelectors: filter.BySelectors,
			ByFederatesWith: filter.ByFederatesWith, ByHint: filter.ByHint, ByDownstream: filter.ByDownstream,
		}
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.entry.CountEntries(ctx, req)
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	fmt.Fprintln(p.Out, plural(int(resp.Count), "registration entry", "registration entries"))
	return nil
}

// printEntry writes one entry as a block of "Label : value" lines and a blank line.
func printEntry(w io.Writer, e *types.Entry) {
	line := func(label, value string) { fmt.Fprintf(w, "%-16s : %s\n", label, value) }
	ttl := func(s int32) string {
		if s == 0 {
			return "default"
		}
		return fmt.Sprintf("%d", s)
	}
	line("Entry ID", cmp.Or(e.Id, "(none)"))
	line("SPIFFE ID", idString(e.SpiffeId))
	line("Parent ID", idString(e.ParentId))
	line("Revision", fmt.Sprintf("%d", e.RevisionNumber))
	if e.Downstream {
		line("Downstream", "true")
	}
	line("X509-SVID TTL", ttl(e.X509SvidTtl))
	line("JWT-SVID TTL", ttl(e.JwtSvidTtl))
	if e.ExpiresAt != 0 {
		line("Expiration time", formatUnix(e.ExpiresAt))
	}
	for _, s := range e.Selectors {
		line("Selector", s.Type+":"+s.Value)
	}
	for _, td := range e.FederatesWith {
		line("FederatesWith", td)
	}
	for _, d := range e.DnsNames {
		line("DNS name", d)
	}
	if e.Admin {
		line("Admin", "true")
	}
	if e.StoreSvid {
		line("StoreSvid", "true")
	}
	if e.Hint != "" {
		line("Hint", e.Hint)
	}
	if e.CreatedAt != 0 {
		line("Created at", formatUnix(e.CreatedAt))
	}
	fmt.Fprintln(w)
}
