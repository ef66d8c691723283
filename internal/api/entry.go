package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/datastore"
)

// syncPageSize is how many entries (or revisions) SyncAuthorizedEntries sends
// per message. An agent with fewer authorized entries gets them all at once.
const syncPageSize = 2000

func apiStatus(code codes.Code, msg string) *types.Status {
	return &types.Status{Code: int32(code), Message: msg}
}

func statusFromErr(err error) *types.Status {
	st, _ := status.FromError(err)
	return &types.Status{Code: int32(st.Code()), Message: st.Message()}
}

var okStatus = &types.Status{Code: int32(codes.OK), Message: "OK"}

func validateEntryID(id string) error {
	if len(id) > 255 {
		return errors.New("id: longer than 255 characters")
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("id: invalid character %q", r)
		}
	}
	return nil
}

// createEntries creates entries in the store and the index; errs[i] is nil,
// datastore.ErrAlreadyExists (out[i] is then the existing entry) or another error.
func (s *Service) createEntries(ctx context.Context, entries []*datastore.Entry) ([]*datastore.Entry, []error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	out := make([]*datastore.Entry, len(entries))
	errs := make([]error, len(entries))
	var todo []*datastore.Entry
	var idx []int
	for i, e := range entries {
		if dup, ok := s.entries.FindDuplicate(e); ok {
			out[i], errs[i] = dup, datastore.ErrAlreadyExists
			continue
		}
		if e.ID != "" {
			if existing, ok := s.entries.Entry(e.ID); ok {
				out[i], errs[i] = existing, datastore.ErrAlreadyExists
				continue
			}
		}
		todo = append(todo, e)
		idx = append(idx, i)
	}
	if len(todo) == 0 {
		return out, errs
	}
	created, cerrs := s.store.CreateEntries(ctx, todo)
	for j, i := range idx {
		out[i], errs[i] = created[j], cerrs[j]
		if cerrs[j] == nil {
			s.entries.PutEntry(created[j])
		}
	}
	s.metrics.entries.Set(float64(s.entries.Count()))
	return out, errs
}

// BatchCreateEntry creates entries, each with its own result.
func (s *Service) BatchCreateEntry(ctx context.Context, req *entryv1.BatchCreateEntryRequest) (*entryv1.BatchCreateEntryResponse, error) {
	resp := &entryv1.BatchCreateEntryResponse{Results: make([]*entryv1.BatchCreateEntryResponse_Result, len(req.Entries))}
	var valid []*datastore.Entry
	var idx []int
	for i, p := range req.Entries {
		e, err := s.entryFromProto(p)
		if err == nil && p.Id != "" {
			err = validateEntryID(p.Id)
		}
		if err != nil {
			resp.Results[i] = &entryv1.BatchCreateEntryResponse_Result{Status: apiStatus(codes.InvalidArgument, "failed to convert entry: "+err.Error())}
			continue
		}
		valid = append(valid, e)
		idx = append(idx, i)
	}
	out, errs := s.createEntries(ctx, valid)
	for j, i := range idx {
		r := &entryv1.BatchCreateEntryResponse_Result{}
		switch err := errs[j]; {
		case err == nil:
			r.Status, r.Entry = okStatus, entryToProto(out[j], req.OutputMask)
			s.log.InfoContext(ctx, "entry created", "entry_id", out[j].ID, "spiffe_id", out[j].SPIFFEID.String())
		case errors.Is(err, datastore.ErrAlreadyExists):
			r.Status = apiStatus(codes.AlreadyExists, "similar entry already exists")
			if out[j] != nil {
				r.Entry = entryToProto(out[j], req.OutputMask)
			}
		default:
			r.Status = statusFromErr(s.statusFor(ctx, "failed to create entry", err))
		}
		resp.Results[i] = r
	}
	return resp, nil
}

// BatchUpdateEntry updates the fields named by input_mask (all when absent).
func (s *Service) BatchUpdateEntry(ctx context.Context, req *entryv1.BatchUpdateEntryRequest) (*entryv1.BatchUpdateEntryResponse, error) {
	resp := &entryv1.BatchUpdateEntryResponse{}
	for _, p := range req.Entries {
		e, err := s.updateEntry(ctx, p, req.InputMask)
		r := &entryv1.BatchUpdateEntryResponse_Result{}
		if err != nil {
			r.Status = statusFromErr(err)
		} else {
			r.Status, r.Entry = okStatus, entryToProto(e, req.OutputMask)
			s.log.InfoContext(ctx, "entry updated", "entry_id", e.ID, "revision", e.RevisionNumber)
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

func (s *Service) updateEntry(ctx context.Context, p *types.Entry, mask *types.EntryMask) (*datastore.Entry, error) {
	if p == nil || p.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "failed to update entry: missing id")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// The change is merged onto the entry as the datastore holds it, inside
	// its write transaction: when another server sharing the datastore just
	// wrote the entry, fields this update does not name keep what it wrote.
	var refused error // fn's own refusal, a status for the caller
	updated, err := s.store.UpdateEntry(ctx, p.Id, func(cur *datastore.Entry) (*datastore.Entry, error) {
		merged := entryToProto(cur, nil)
		overlayEntry(merged, p, mask)
		e, err := s.entryFromProto(merged)
		if err != nil {
			refused = status.Errorf(codes.InvalidArgument, "failed to update entry: %v", err)
			return nil, refused
		}
		if dup, ok := s.entries.FindDuplicate(e); ok && dup.ID != p.Id {
			refused = status.Errorf(codes.AlreadyExists, "entry %q would duplicate entry %q", p.Id, dup.ID)
			return nil, refused
		}
		return e, nil
	})
	switch {
	case refused != nil:
		return nil, refused
	case err == nil:
	case errors.Is(err, datastore.ErrNotFound):
		s.entries.DeleteEntry(p.Id)
		return nil, status.Errorf(codes.NotFound, "entry %q not found", p.Id)
	case errors.Is(err, datastore.ErrAlreadyExists):
		return nil, status.Errorf(codes.AlreadyExists, "entry %q would duplicate another entry", p.Id)
	default:
		return nil, s.statusFor(ctx, "failed to update entry", err)
	}
	s.entries.PutEntry(updated)
	return updated, nil
}

// overlayEntry copies the fields of src selected by mask (all when nil) onto dst.
func overlayEntry(dst, src *types.Entry, mask *types.EntryMask) {
	all := mask == nil
	if all || mask.SpiffeId {
		dst.SpiffeId = src.SpiffeId
	}
	if all || mask.ParentId {
		dst.ParentId = src.ParentId
	}
	if all || mask.Selectors {
		dst.Selectors = src.Selectors
	}
	if all || mask.X509SvidTtl {
		dst.X509SvidTtl = src.X509SvidTtl
	}
	if all || mask.JwtSvidTtl {
		dst.JwtSvidTtl = src.JwtSvidTtl
	}
	if all || mask.FederatesWith {
		dst.FederatesWith = src.FederatesWith
	}
	if all || mask.Admin {
		dst.Admin = src.Admin
	}
	if all || mask.Downstream {
		dst.Downstream = src.Downstream
	}
	if all || mask.ExpiresAt {
		dst.ExpiresAt = src.ExpiresAt
	}
	if all || mask.DnsNames {
		dst.DnsNames = src.DnsNames
	}
	if all || mask.StoreSvid {
		dst.StoreSvid = src.StoreSvid
	}
	if all || mask.Hint {
		dst.Hint = src.Hint
	}
	if all || mask.AdditionalAttributes {
		dst.AdditionalAttributes = src.AdditionalAttributes
	}
}

// BatchDeleteEntry deletes entries by ID, each with its own result.
func (s *Service) BatchDeleteEntry(ctx context.Context, req *entryv1.BatchDeleteEntryRequest) (*entryv1.BatchDeleteEntryResponse, error) {
	resp := &entryv1.BatchDeleteEntryResponse{}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for _, id := range req.Ids {
		r := &entryv1.BatchDeleteEntryResponse_Result{Id: id}
		if id == "" {
			r.Status = apiStatus(codes.InvalidArgument, "missing entry ID")
			resp.Results = append(resp.Results, r)
			continue
		}
		_, err := s.store.DeleteEntry(ctx, id)
		switch {
		case err == nil:
			s.entries.DeleteEntry(id)
			r.Status = okStatus
			s.log.InfoContext(ctx, "entry deleted", "entry_id", id)
		case errors.Is(err, datastore.ErrNotFound):
			r.Status = apiStatus(codes.NotFound, "entry not found")
		default:
			r.Status = statusFromErr(s.statusFor(ctx, "failed to delete entry "+id, err))
		}
		resp.Results = append(resp.Results, r)
	}
	s.metrics.entries.Set(float64(s.entries.Count()))
	return resp, nil
}

// GetEntry returns one entry.
func (s *Service) GetEntry(ctx context.Context, req *entryv1.GetEntryRequest) (*types.Entry, error) {
	if req.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "missing ID")
	}
	e, ok := s.entries.Entry(req.Id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "entry %q not found", req.Id)
	}
	return entryToProto(e, req.OutputMask), nil
}

type entryFilter struct {
	spiffeID, parentID spiffeid.ID
	selectors          *types.SelectorMatch
	federatesWith      *types.FederatesWithMatch
	hint               *string
	downstream         *bool
}

func parseEntryFilter(bySPIFFE, byParent *types.SPIFFEID, sels *types.SelectorMatch, feds *types.FederatesWithMatch,
	hint interface{ GetValue() string }, hintNil bool, downstream interface{ GetValue() bool }, downNil bool) (entryFilter, error) {
	var f entryFilter
	var err error
	if bySPIFFE != nil {
		if f.spiffeID, err = idFromProto("by_spiffe_id", bySPIFFE); err != nil {
			return f, err
		}
	}
	if byParent != nil {
		if f.parentID, err = idFromProto("by_parent_id", byParent); err != nil {
			return f, err
		}
	}
	if sels != nil {
		if len(sels.Selectors) == 0 {
			return f, errors.New("by_selectors: empty selector set")
		}
		if _, err := selectorsFromProto("by_selectors", sels.Selectors); err != nil {
			return f, err
		}
		f.selectors = sels
	}
	if feds != nil {
		if len(feds.TrustDomains) == 0 {
			return f, errors.New("by_federates_with: empty trust domain set")
		}
		for _, td := range feds.TrustDomains {
			if _, err := spiffeid.TrustDomainFromString(td); err != nil {
				return f, fmt.Errorf("by_federates_with: invalid trust domain %q: %v", td, err)
			}
		}
		f.federatesWith = feds
	}
	if !hintNil {
		h := hint.GetValue()
		f.hint = &h
	}
	if !downNil {
		d := downstream.GetValue()
		f.downstream = &d
	}
	return f, nil
}

func (f entryFilter) match(e *datastore.Entry) bool {
	if !f.spiffeID.IsZero() && e.SPIFFEID != f.spiffeID {
		return false
	}
	if !f.parentID.IsZero() && e.ParentID != f.parentID {
		return false
	}
	if f.hint != nil && e.Hint != *f.hint {
		return false
	}
	if f.downstream != nil && e.Downstream != *f.downstream {
		return false
	}
	if f.selectors != nil {
		want, _ := selectorsFromProto("", f.selectors.Selectors)
		if !matchSelectors(e.Selectors, want, f.selectors.Match) {
			return false
		}
	}
	if f.federatesWith != nil {
		have := make([]string, len(e.FederatesWith))
		for i, td := range e.FederatesWith {
			have[i] = td.Name()
		}
		if !matchStrings(have, f.federatesWith.TrustDomains, f.federatesWith.Match) {
			return false
		}
	}
	return true
}

func matchStrings(have, want []string, how types.FederatesWithMatch_MatchBehavior) bool {
	sub := func(a, b []string) bool {
		for _, x := range a {
			if !slices.Contains(b, x) {
				return false
			}
		}
		return true
	}
	switch how {
	case types.FederatesWithMatch_MATCH_EXACT:
		return sub(have, want) && sub(want, have)
	case types.FederatesWithMatch_MATCH_SUBSET:
		return sub(have, want)
	case types.FederatesWithMatch_MATCH_SUPERSET:
		return sub(want, have)
	case types.FederatesWithMatch_MATCH_ANY:
		for _, w := range want {
			if slices.Contains(have, w) {
				return true
			}
		}
	}
	return false
}

func (s *Service) entryFilterFromList(fl *entryv1.ListEntriesRequest_Filter) (entryFilter, error) {
	if fl == nil {
		return entryFilter{}, nil
	}
	return parseEntryFilter(fl.BySpiffeId, fl.ByParentId, fl.BySelectors, fl.ByFederatesWith,
		fl.ByHint, fl.ByHint == nil, fl.ByDownstream, fl.ByDownstream == nil)
}

// ListEntries lists entries in entry ID order with paging.
func (s *Service) ListEntries(ctx context.Context, req *entryv1.ListEntriesRequest) (*entryv1.ListEntriesResponse, error) {
	if req.PageSize < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", req.PageSize)
	}
	f, err := s.entryFilterFromList(req.Filter)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to build filter: %v", err)
	}
	var entries []*datastore.Entry
	var next string
	if !f.spiffeID.IsZero() && req.PageSize == 0 {
		for _, e := range s.entries.EntriesBySPIFFEID(f.spiffeID) {
			if f.match(e) {
				entries = append(entries, e)
			}
		}
		slices.SortFunc(entries, func(a, b *datastore.Entry) int { return compareStrings(a.ID, b.ID) })
	} else {
		entries, next = s.entries.List(f.match, req.PageToken, int(req.PageSize))
	}
	resp := &entryv1.ListEntriesResponse{NextPageToken: next, Entries: make([]*types.Entry, len(entries))}
	for i, e := range entries {
		resp.Entries[i] = entryToProto(e, req.OutputMask)
	}
	return resp, nil
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

// CountEntries counts entries matching the filter.
func (s *Service) CountEntries(ctx context.Context, req *entryv1.CountEntriesRequest) (*entryv1.CountEntriesResponse, error) {
	var f entryFilter
	if fl := req.Filter; fl != nil {
		var err error
		f, err = parseEntryFilter(fl.BySpiffeId, fl.ByParentId, fl.BySelectors, fl.ByFederatesWith,
			fl.ByHint, fl.ByHint == nil, fl.ByDownstream, fl.ByDownstream == nil)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "failed to build filter: %v", err)
		}
	}
	if req.Filter == nil {
		return &entryv1.CountEntriesResponse{Count: int32(s.entries.Count())}, nil
	}
	entries, _ := s.entries.List(f.match, "", 0)
	return &entryv1.CountEntriesResponse{Count: int32(len(entries))}, nil
}

// authorizedEntries returns the caller agent's entries that have not expired.
func (s *Service) authorizedEntries(agentID spiffeid.ID) []*datastore.Entry {
	all := s.entries.AuthorizedEntries(agentID)
	now := s.now().Unix()
	out := all[:0:0]
	for _, e := range all {
		if e.ExpiresAt != 0 && e.ExpiresAt <= now {
			continue
		}
		out = append(out, e)
	}
	return out
}

// GetAuthorizedEntries returns every entry the calling agent may mint SVIDs for.
func (s *Service) GetAuthorizedEntries(ctx context.Context, req *entryv1.GetAuthorizedEntriesRequest) (*entryv1.GetAuthorizedEntriesResponse, error) {
	entries := s.authorizedEntries(CallerFrom(ctx).ID)
	resp := &entryv1.GetAuthorizedEntriesResponse{Entries: make([]*types.Entry, len(entries))}
	for i, e := range entries {
		resp.Entries[i] = entryToProto(e, req.OutputMask)
	}
	return resp, nil
}

// SyncAuthorizedEntries streams the caller's authorized entries: all at once
// when they fit in a page, else revisions first and then the entries the
// agent asks for (see the proto for the flow).
func (s *Service) SyncAuthorizedEntries(stream entryv1.Entry_SyncAuthorizedEntriesServer) error {
	ctx := stream.Context()
	req, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "receiving sync request: %v", err)
	}
	mask := req.OutputMask
	entries := s.authorizedEntries(CallerFrom(ctx).ID)
	if len(entries) < syncPageSize {
		resp := &entryv1.SyncAuthorizedEntriesResponse{Entries: make([]*types.Entry, len(entries))}
		for i, e := range entries {
			resp.Entries[i] = entryToProto(e, mask)
		}
		return stream.Send(resp)
	}
	slices.SortFunc(entries, func(a, b *datastore.Entry) int { return compareStrings(a.ID, b.ID) })
	for start := 0; start < len(entries); start += syncPageSize {
		end := min(start+syncPageSize, len(entries))
		resp := &entryv1.SyncAuthorizedEntriesResponse{More: end < len(entries)}
		for _, e := range entries[start:end] {
			resp.EntryRevisions = append(resp.EntryRevisions, &entryv1.EntryRevision{Id: e.ID, RevisionNumber: e.RevisionNumber, CreatedAt: e.CreatedAt})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var out []*types.Entry
		for _, id := range req.Ids {
			i, found := slices.BinarySearchFunc(entries, id, func(e *datastore.Entry, id string) int { return compareStrings(e.ID, id) })
			if found {
				out = append(out, entryToProto(entries[i], mask))
			}
		}
		for start := 0; ; start += syncPageSize {
			end := min(start+syncPageSize, len(out))
			if err := stream.Send(&entryv1.SyncAuthorizedEntriesResponse{Entries: out[start:end], More: end < len(out)}); err != nil {
				return err
			}
			if end >= len(out) {
				break
			}
		}
	}
}
