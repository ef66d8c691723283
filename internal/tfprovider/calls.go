package tfprovider

import (
	"context"
	"fmt"
	"slices"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/cli/admin"
)

// addError reports err as one diagnostic line: the summary is the whole
// message (what failed on what), with no detail to repeat it.
func addError(diags *diag.Diagnostics, err error) {
	diags.AddError(err.Error(), "")
}

// call returns the admin client and a context bounded by the provider's
// timeout, or reports why the server cannot be reached.
func (s *Server) call(ctx context.Context, diags *diag.Diagnostics) (*admin.Client, context.Context, context.CancelFunc) {
	c, err := s.Client()
	if err != nil {
		addError(diags, err)
		return nil, nil, func() {}
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout())
	return c, ctx, cancel
}

// resultError turns a batch item's status into an *admin.RPCError, nil when OK.
func resultError(op string, st *types.Status) error {
	if code := codes.Code(st.GetCode()); code != codes.OK {
		return &admin.RPCError{Op: op, Code: code, Message: st.GetMessage()}
	}
	return nil
}

// createEntry creates e through the batcher. When the server already holds
// an entry with the same SPIFFE ID, parent and selectors, that entry is
// adopted and updated to e (what `arbor topology apply` does), so a
// configuration written for entries made by hand takes them over.
func (s *Server) createEntry(ctx context.Context, e *types.Entry) (*types.Entry, error) {
	r, err := s.entries().create.do(ctx, e)
	if err != nil {
		return nil, err
	}
	switch codes.Code(r.GetStatus().GetCode()) {
	case codes.OK:
		return r.Entry, nil
	case codes.AlreadyExists:
		if r.Entry == nil {
			break
		}
		mask := entryDiff(r.Entry, e)
		if mask == nil {
			return r.Entry, nil
		}
		want := cloneEntry(e)
		want.Id = r.Entry.Id
		return s.updateEntry(ctx, want, mask)
	}
	return nil, fmt.Errorf("creating entry %s: %w", idString(e.SpiffeId), resultError("entry create", r.GetStatus()))
}

// getEntry returns the entry with id; nil, nil when the server has none.
func (s *Server) getEntry(ctx context.Context, id string) (*types.Entry, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout())
	defer cancel()
	e, err := entryv1.NewEntryClient(c.Conn()).GetEntry(ctx, &entryv1.GetEntryRequest{Id: id})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, c.Error("entry show "+id, err)
	}
	return e, nil
}

// updateEntry writes the fields of e named by mask to the entry with e's
// ID, and only those: a field changed on the server by someone else and
// not in the mask keeps its value.
func (s *Server) updateEntry(ctx context.Context, e *types.Entry, mask *types.EntryMask) (*types.Entry, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout())
	defer cancel()
	resp, err := entryv1.NewEntryClient(c.Conn()).BatchUpdateEntry(ctx, &entryv1.BatchUpdateEntryRequest{
		Entries: []*types.Entry{e}, InputMask: mask})
	if err != nil {
		return nil, c.Error("entry update "+e.Id, err)
	}
	if len(resp.Results) != 1 {
		return nil, fmt.Errorf("entry update %s: the server answered %d results for one entry", e.Id, len(resp.Results))
	}
	if err := resultError("entry update "+e.Id, resp.Results[0].GetStatus()); err != nil {
		return nil, err
	}
	return resp.Results[0].Entry, nil
}

// deleteEntry deletes the entry with id through the batcher; an entry
// already gone is not an error.
func (s *Server) deleteEntry(ctx context.Context, id string) error {
	r, err := s.entries().delete.do(ctx, id)
	if err != nil {
		return err
	}
	if codes.Code(r.GetStatus().GetCode()) == codes.NotFound {
		return nil
	}
	return resultError("entry delete "+id, r.GetStatus())
}

// bundle returns the server's own bundle.
func (s *Server) bundle(ctx context.Context) (*types.Bundle, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout())
	defer cancel()
	b, err := bundlev1.NewBundleClient(c.Conn()).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, c.Error("bundle show", err)
	}
	return b, nil
}

// entryDiff is the mask of the fields of want that differ from have (the
// settable ones), nil when none do.
func entryDiff(have, want *types.Entry) *types.EntryMask {
	m := &types.EntryMask{
		SpiffeId:      idString(have.SpiffeId) != idString(want.SpiffeId),
		ParentId:      idString(have.ParentId) != idString(want.ParentId),
		Selectors:     !slices.Equal(selectorStrings(have.Selectors), selectorStrings(want.Selectors)),
		X509SvidTtl:   have.X509SvidTtl != want.X509SvidTtl,
		JwtSvidTtl:    have.JwtSvidTtl != want.JwtSvidTtl,
		FederatesWith: !slices.Equal(sortedCopy(have.FederatesWith), sortedCopy(want.FederatesWith)),
		Admin:         have.Admin != want.Admin,
		Downstream:    have.Downstream != want.Downstream,
		ExpiresAt:     have.ExpiresAt != want.ExpiresAt,
		DnsNames:      !slices.Equal(have.DnsNames, want.DnsNames),
		StoreSvid:     have.StoreSvid != want.StoreSvid,
		Hint:          have.Hint != want.Hint,
	}
	if !(m.SpiffeId || m.ParentId || m.Selectors || m.X509SvidTtl || m.JwtSvidTtl || m.FederatesWith ||
		m.Admin || m.Downstream || m.ExpiresAt || m.DnsNames || m.StoreSvid || m.Hint) {
		return nil
	}
	return m
}

func idString(p *types.SPIFFEID) string {
	if p == nil {
		return ""
	}
	return "spiffe://" + p.TrustDomain + p.Path
}

// selectorStrings returns the selectors as sorted "type:value" strings.
func selectorStrings(ss []*types.Selector) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.Type+":"+s.Value)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func cloneEntry(e *types.Entry) *types.Entry { return proto.Clone(e).(*types.Entry) }
