package api

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sort"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/datastore"
)

// GetBundle returns the own trust domain's bundle.
func (s *Service) GetBundle(ctx context.Context, req *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	b := s.bundles.Own()
	if b == nil {
		return nil, status.Error(codes.NotFound, "bundle not found")
	}
	return bundleToProto(b, req.OutputMask), nil
}

// CountBundles counts every bundle, own and federated.
func (s *Service) CountBundles(ctx context.Context, _ *bundlev1.CountBundlesRequest) (*bundlev1.CountBundlesResponse, error) {
	bs, err := s.bundles.ListBundles(ctx)
	if err != nil {
		return nil, s.statusFor(ctx, "failed to count bundles", err)
	}
	return &bundlev1.CountBundlesResponse{Count: int32(len(bs))}, nil
}

// mergeAuthorities adds x509 and jwt authorities to b, skipping ones present.
// With taints, a tainted JWT key is never added: it marks the key b holds
// with the same key ID and public key tainted (a revoked key stays gone).
// It reports whether b changed.
func mergeAuthorities(b *datastore.Bundle, x5 []datastore.X509Authority, jwts []datastore.JWTAuthority, taints bool) bool {
	changed := false
	for _, a := range x5 {
		changed = b.AddX509Authority(a) || changed
	}
	for _, k := range jwts {
		if !taints || !k.Tainted {
			changed = b.AddJWTAuthority(k) || changed
			continue
		}
		i := slices.IndexFunc(b.JWTAuthorities, func(h datastore.JWTAuthority) bool {
			return h.KeyID == k.KeyID && bytes.Equal(h.PublicKey, k.PublicKey)
		})
		if i >= 0 && !b.JWTAuthorities[i].Tainted {
			b.JWTAuthorities[i].Tainted = true
			changed = true
		}
	}
	return changed
}

// AppendBundle adds authorities to the own bundle.
func (s *Service) AppendBundle(ctx context.Context, req *bundlev1.AppendBundleRequest) (*types.Bundle, error) {
	if len(req.X509Authorities) == 0 && len(req.JwtAuthorities) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no authorities to append")
	}
	var x5 []datastore.X509Authority
	for _, p := range req.X509Authorities {
		a, err := x509AuthorityFromProto(p)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "failed to convert X.509 authority: %v", err)
		}
		x5 = append(x5, a)
	}
	var jwts []datastore.JWTAuthority
	for _, p := range req.JwtAuthorities {
		k, err := jwtKeyFromProto(p)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "failed to convert JWT authority: %v", err)
		}
		jwts = append(jwts, k)
	}
	b, err := s.appendOwn(ctx, x5, jwts, false, "failed to append bundle")
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "bundle appended", "x509_authorities", len(x5), "jwt_authorities", len(jwts))
	return bundleToProto(b, req.OutputMask), nil
}

var errNoBundle = errors.New("no bundle")

// appendOwn adds authorities missing from the own bundle, bumping its
// sequence number when anything was added; errors are gRPC statuses.
func (s *Service) appendOwn(ctx context.Context, x5 []datastore.X509Authority, jwts []datastore.JWTAuthority, taints bool, what string) (*datastore.Bundle, error) {
	b, err := s.bundles.UpdateBundle(ctx, s.td, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		if cur == nil {
			return nil, errNoBundle
		}
		next := cur.Clone()
		if !mergeAuthorities(next, x5, jwts, taints) {
			return cur, nil
		}
		next.SequenceNumber++
		return next, nil
	})
	if errors.Is(err, errNoBundle) {
		return nil, status.Error(codes.NotFound, "bundle not found")
	}
	if err != nil {
		return nil, s.statusFor(ctx, what, err)
	}
	return b, nil
}

// PublishJWTAuthority adds a downstream server's JWT signing key to the own
// bundle and returns every JWT authority of it. A key published tainted (a
// downstream tier retiring its old key) is marked tainted here too, and
// forwarded so to this server's parent: so the tier at the top holds it
// tainted and can revoke it for the whole tree.
func (s *Service) PublishJWTAuthority(ctx context.Context, req *bundlev1.PublishJWTAuthorityRequest) (*bundlev1.PublishJWTAuthorityResponse, error) {
	k, err := jwtKeyFromProto(req.JwtAuthority)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid JWT authority: %v", err)
	}
	if k.ExpiresAt != 0 && k.ExpiresAt <= s.now().Unix() {
		return nil, status.Errorf(codes.InvalidArgument, "JWT authority %q has already expired", k.KeyID)
	}
	keys := []datastore.JWTAuthority{k}
	if s.cfg.PublishUpstream != nil {
		parentKeys, err := s.cfg.PublishUpstream(ctx, k)
		if err != nil {
			s.log.WarnContext(ctx, "publishing a child's JWT key to the parent failed", "kid", k.KeyID, "err", err)
			return nil, status.Error(codes.Unavailable, "this server's parent is unreachable; retry later")
		}
		keys = append(keys, parentKeys...)
	}
	b, err := s.appendOwn(ctx, nil, keys, true, "failed to publish JWT authority")
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "JWT authority published", "spiffe_id", CallerFrom(ctx).ID.String(), "kid", k.KeyID)
	resp := &bundlev1.PublishJWTAuthorityResponse{}
	for _, a := range b.JWTAuthorities {
		resp.JwtAuthorities = append(resp.JwtAuthorities, jwtKeyToProto(a))
	}
	return resp, nil
}

func (s *Service) federatedTD(name string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return td, status.Errorf(codes.InvalidArgument, "trust_domain: invalid %q: %v", name, err)
	}
	if td == s.td {
		return td, status.Errorf(codes.InvalidArgument, "%q is this server's own trust domain, not a federated one", name)
	}
	return td, nil
}

// ListFederatedBundles lists federated bundles by trust domain name with paging.
func (s *Service) ListFederatedBundles(ctx context.Context, req *bundlev1.ListFederatedBundlesRequest) (*bundlev1.ListFederatedBundlesResponse, error) {
	if req.PageSize < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", req.PageSize)
	}
	bs, err := s.bundles.ListBundles(ctx)
	switch {
	case err == nil:
		s.fed.putList(bs)
	case errors.Is(err, datastore.ErrUnavailable):
		// A downstream tier reads these on its parent every few seconds:
		// answer from the last list read while the datastore is away.
		var ok bool
		if bs, ok = s.fed.list(); !ok {
			return nil, s.statusFor(ctx, "failed to list bundles", err)
		}
		s.storeDown(err)
	default:
		return nil, s.statusFor(ctx, "failed to list bundles", err)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].TrustDomain.Name() < bs[j].TrustDomain.Name() })
	resp := &bundlev1.ListFederatedBundlesResponse{}
	for _, b := range bs {
		name := b.TrustDomain.Name()
		if b.TrustDomain == s.td || (req.PageToken != "" && name <= req.PageToken) {
			continue
		}
		if req.PageSize > 0 && len(resp.Bundles) == int(req.PageSize) {
			resp.NextPageToken = resp.Bundles[len(resp.Bundles)-1].TrustDomain
			break
		}
		resp.Bundles = append(resp.Bundles, bundleToProto(b, req.OutputMask))
	}
	return resp, nil
}

// GetFederatedBundle returns one federated bundle.
func (s *Service) GetFederatedBundle(ctx context.Context, req *bundlev1.GetFederatedBundleRequest) (*types.Bundle, error) {
	td, err := s.federatedTD(req.TrustDomain)
	if err != nil {
		return nil, err
	}
	b, err := s.bundles.FetchBundle(ctx, td)
	switch {
	case err == nil:
		s.fed.put(td, b)
	case errors.Is(err, datastore.ErrNotFound):
		s.fed.put(td, nil)
		return nil, status.Errorf(codes.NotFound, "bundle for %q not found", td)
	case errors.Is(err, datastore.ErrUnavailable):
		// Agents read every federated bundle at each sync: while the
		// datastore is away they get the copy last read here.
		last, ok := s.fed.get(td)
		if !ok {
			return nil, s.statusFor(ctx, "failed to fetch bundle", err)
		}
		s.storeDown(err)
		b = last
	default:
		return nil, s.statusFor(ctx, "failed to fetch bundle", err)
	}
	return bundleToProto(b, req.OutputMask), nil
}

// lastKnownBundles keeps the federated bundles as last read from the
// datastore, to answer agents and child tiers from while it cannot be
// reached. Federated bundles have no event log, so it is never read while
// the datastore answers: it is a fallback, stale by at most the outage.
type lastKnownBundles struct {
	mu     sync.Mutex
	byTD   map[spiffeid.TrustDomain]*datastore.Bundle
	all    []*datastore.Bundle
	listed bool
}

// put records td's bundle as read; nil records that it does not exist.
func (l *lastKnownBundles) put(td spiffeid.TrustDomain, b *datastore.Bundle) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b == nil {
		delete(l.byTD, td)
		return
	}
	if l.byTD == nil {
		l.byTD = make(map[spiffeid.TrustDomain]*datastore.Bundle)
	}
	l.byTD[td] = b
}

// forget drops td's bundle (deleted here) from the single reads and the list.
func (l *lastKnownBundles) forget(td spiffeid.TrustDomain) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byTD, td)
	l.all = slices.DeleteFunc(slices.Clone(l.all), func(b *datastore.Bundle) bool { return b.TrustDomain == td })
}

func (l *lastKnownBundles) get(td spiffeid.TrustDomain) (*datastore.Bundle, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.byTD[td]
	return b, ok
}

// putList records a full listing (it replaces what single reads recorded).
func (l *lastKnownBundles) putList(bs []*datastore.Bundle) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all, l.listed = slices.Clone(bs), true
	l.byTD = make(map[spiffeid.TrustDomain]*datastore.Bundle, len(bs))
	for _, b := range bs {
		l.byTD[b.TrustDomain] = b
	}
}

func (l *lastKnownBundles) list() ([]*datastore.Bundle, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all), l.listed
}

type bundleWrite int

const (
	bundleCreate bundleWrite = iota
	bundleUpdate
	bundleSet
)

func (s *Service) writeFederated(ctx context.Context, p *types.Bundle, how bundleWrite, mask *types.BundleMask) (*datastore.Bundle, error) {
	in, err := bundleFromProto(p)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "failed to convert bundle: %v", err)
	}
	if _, err := s.federatedTD(in.TrustDomain.Name()); err != nil {
		return nil, err
	}
	if how != bundleUpdate && len(in.X509Authorities) == 0 {
		return nil, status.Error(codes.InvalidArgument, "a federated bundle needs at least one X.509 authority")
	}
	var notFound, exists bool
	b, err := s.bundles.UpdateBundle(ctx, in.TrustDomain, func(cur *datastore.Bundle) (*datastore.Bundle, error) {
		switch how {
		case bundleCreate:
			if cur != nil {
				exists = true
				return nil, datastore.ErrAlreadyExists
			}
			return in, nil
		case bundleUpdate:
			if cur == nil {
				notFound = true
				return nil, datastore.ErrNotFound
			}
			next := cur.Clone()
			if mask == nil || mask.X509Authorities {
				next.X509Authorities = in.X509Authorities
			}
			if mask == nil || mask.JwtAuthorities {
				next.JWTAuthorities = in.JWTAuthorities
			}
			if mask == nil || mask.RefreshHint {
				next.RefreshHint = in.RefreshHint
			}
			if mask == nil || mask.SequenceNumber {
				next.SequenceNumber = in.SequenceNumber
			}
			if len(next.X509Authorities) == 0 {
				return nil, errNoAuthorities
			}
			return next, nil
		}
		return in, nil
	})
	switch {
	case err == nil:
		return b, nil
	case exists:
		return nil, status.Errorf(codes.AlreadyExists, "bundle for %q already exists", in.TrustDomain)
	case notFound:
		return nil, status.Errorf(codes.NotFound, "bundle for %q not found", in.TrustDomain)
	case errors.Is(err, errNoAuthorities):
		return nil, status.Error(codes.InvalidArgument, "a federated bundle needs at least one X.509 authority")
	}
	return nil, s.statusFor(ctx, "failed to write federated bundle", err)
}

var errNoAuthorities = errors.New("no X.509 authorities")

func (s *Service) batchWriteFederated(ctx context.Context, ps []*types.Bundle, how bundleWrite, in, out *types.BundleMask) ([]*types.Status, []*types.Bundle) {
	statuses := make([]*types.Status, len(ps))
	bundles := make([]*types.Bundle, len(ps))
	for i, p := range ps {
		b, err := s.writeFederated(ctx, p, how, in)
		if err != nil {
			statuses[i] = statusFromErr(err)
			continue
		}
		statuses[i], bundles[i] = okStatus, bundleToProto(b, out)
		s.log.InfoContext(ctx, "federated bundle written", "trust_domain", b.TrustDomain.Name())
	}
	return statuses, bundles
}

// BatchCreateFederatedBundle creates federated bundles that do not exist yet.
func (s *Service) BatchCreateFederatedBundle(ctx context.Context, req *bundlev1.BatchCreateFederatedBundleRequest) (*bundlev1.BatchCreateFederatedBundleResponse, error) {
	st, bs := s.batchWriteFederated(ctx, req.Bundle, bundleCreate, nil, req.OutputMask)
	resp := &bundlev1.BatchCreateFederatedBundleResponse{}
	for i := range st {
		resp.Results = append(resp.Results, &bundlev1.BatchCreateFederatedBundleResponse_Result{Status: st[i], Bundle: bs[i]})
	}
	return resp, nil
}

// BatchUpdateFederatedBundle updates existing federated bundles (fields by input_mask).
func (s *Service) BatchUpdateFederatedBundle(ctx context.Context, req *bundlev1.BatchUpdateFederatedBundleRequest) (*bundlev1.BatchUpdateFederatedBundleResponse, error) {
	st, bs := s.batchWriteFederated(ctx, req.Bundle, bundleUpdate, req.InputMask, req.OutputMask)
	resp := &bundlev1.BatchUpdateFederatedBundleResponse{}
	for i := range st {
		resp.Results = append(resp.Results, &bundlev1.BatchUpdateFederatedBundleResponse_Result{Status: st[i], Bundle: bs[i]})
	}
	return resp, nil
}

// BatchSetFederatedBundle creates or replaces federated bundles.
func (s *Service) BatchSetFederatedBundle(ctx context.Context, req *bundlev1.BatchSetFederatedBundleRequest) (*bundlev1.BatchSetFederatedBundleResponse, error) {
	st, bs := s.batchWriteFederated(ctx, req.Bundle, bundleSet, nil, req.OutputMask)
	resp := &bundlev1.BatchSetFederatedBundleResponse{}
	for i := range st {
		resp.Results = append(resp.Results, &bundlev1.BatchSetFederatedBundleResponse_Result{Status: st[i], Bundle: bs[i]})
	}
	return resp, nil
}

// BatchDeleteFederatedBundle deletes federated bundles. RESTRICT refuses while
// entries federate with the trust domain; DISSOCIATE removes it from those
// entries; DELETE deletes those entries.
func (s *Service) BatchDeleteFederatedBundle(ctx context.Context, req *bundlev1.BatchDeleteFederatedBundleRequest) (*bundlev1.BatchDeleteFederatedBundleResponse, error) {
	resp := &bundlev1.BatchDeleteFederatedBundleResponse{}
	for _, name := range req.TrustDomains {
		r := &bundlev1.BatchDeleteFederatedBundleResponse_Result{TrustDomain: name}
		r.Status = statusFromErr(s.deleteFederated(ctx, name, req.Mode))
		if r.Status.Code == int32(codes.OK) {
			r.Status = okStatus
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

func (s *Service) deleteFederated(ctx context.Context, name string, mode bundlev1.BatchDeleteFederatedBundleRequest_Mode) error {
	td, err := s.federatedTD(name)
	if err != nil {
		return err
	}
	if _, err := s.bundles.FetchBundle(ctx, td); errors.Is(err, datastore.ErrNotFound) {
		return status.Errorf(codes.NotFound, "bundle for %q not found", td)
	} else if err != nil {
		return s.statusFor(ctx, "failed to fetch bundle", err)
	}
	users, _ := s.entries.List(func(e *datastore.Entry) bool { return slices.Contains(e.FederatesWith, td) }, "", 0)
	switch mode {
	case bundlev1.BatchDeleteFederatedBundleRequest_RESTRICT:
		if len(users) > 0 {
			return status.Errorf(codes.FailedPrecondition, "%d entries federate with %q; delete with mode DISSOCIATE or DELETE", len(users), td)
		}
	case bundlev1.BatchDeleteFederatedBundleRequest_DISSOCIATE:
		for _, e := range users {
			p := entryToProto(e, nil)
			p.FederatesWith = slices.DeleteFunc(p.FederatesWith, func(f string) bool { return f == td.Name() })
			if _, err := s.updateEntry(ctx, p, &types.EntryMask{FederatesWith: true}); err != nil {
				return err
			}
		}
	case bundlev1.BatchDeleteFederatedBundleRequest_DELETE:
		ids := make([]string, len(users))
		for i, e := range users {
			ids[i] = e.ID
		}
		if _, err := s.BatchDeleteEntry(ctx, &entryv1.BatchDeleteEntryRequest{Ids: ids}); err != nil {
			return err
		}
	default:
		return status.Errorf(codes.InvalidArgument, "unknown delete mode %v", mode)
	}
	if err := s.bundles.DeleteBundle(ctx, td); err != nil {
		if errors.Is(err, datastore.ErrNotFound) {
			return status.Errorf(codes.NotFound, "bundle for %q not found", td)
		}
		return s.statusFor(ctx, "failed to delete bundle", err)
	}
	s.fed.forget(td)
	s.log.InfoContext(ctx, "federated bundle deleted", "trust_domain", td.Name(), "mode", mode.String())
	return nil
}
