package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/federation"
)

// The trustdomain.v1 service: federation relationships (which trust domains
// this one federates with, where their bundle endpoints are and how they
// authenticate), kept in the datastore so every server sharing it sees the
// same ones, and RefreshBundle, which fetches a relationship's bundle now.

// relationshipFromProto validates a relationship of a create or update.
func (s *Service) relationshipFromProto(p *types.FederationRelationship) (*datastore.FederationRelationship, *datastore.Bundle, error) {
	if p == nil {
		return nil, nil, errors.New("missing federation relationship")
	}
	td, err := s.federatedTD(p.TrustDomain)
	if err != nil {
		return nil, nil, errors.New(status.Convert(err).Message())
	}
	r := &datastore.FederationRelationship{TrustDomain: td, BundleEndpointURL: p.BundleEndpointUrl}
	u, err := url.Parse(p.BundleEndpointUrl)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return nil, nil, fmt.Errorf("bundle_endpoint_url: %q is not an https:// URL without credentials", p.BundleEndpointUrl)
	}
	switch prof := p.BundleEndpointProfile.(type) {
	case *types.FederationRelationship_HttpsWeb:
		r.Profile = federation.ProfileHTTPSWeb
	case *types.FederationRelationship_HttpsSpiffe:
		r.Profile = federation.ProfileHTTPSSPIFFE
		id, err := spiffeid.FromString(prof.HttpsSpiffe.GetEndpointSpiffeId())
		if err != nil {
			return nil, nil, fmt.Errorf("https_spiffe endpoint_spiffe_id: %q: %v", prof.HttpsSpiffe.GetEndpointSpiffeId(), err)
		}
		r.EndpointSPIFFEID = id
	default:
		return nil, nil, errors.New("bundle_endpoint_profile: https_web or https_spiffe is required")
	}
	var b *datastore.Bundle
	if p.TrustDomainBundle != nil {
		if b, err = bundleFromProto(p.TrustDomainBundle); err != nil {
			return nil, nil, fmt.Errorf("trust_domain_bundle: %v", err)
		}
		if b.TrustDomain != td {
			return nil, nil, fmt.Errorf("trust_domain_bundle: a bundle of %q, not of %q", b.TrustDomain, td)
		}
		if len(b.X509Authorities) == 0 {
			return nil, nil, errors.New("trust_domain_bundle: at least one X.509 authority is required")
		}
	}
	return r, b, nil
}

// relationshipToProto includes the trust domain's bundle when held.
func (s *Service) relationshipToProto(ctx context.Context, r *datastore.FederationRelationship, mask *types.FederationRelationshipMask) *types.FederationRelationship {
	p := &types.FederationRelationship{TrustDomain: r.TrustDomain.Name()}
	all := mask == nil
	if all || mask.BundleEndpointUrl {
		p.BundleEndpointUrl = r.BundleEndpointURL
	}
	if all || mask.BundleEndpointProfile {
		if r.Profile == federation.ProfileHTTPSSPIFFE {
			p.BundleEndpointProfile = &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: r.EndpointSPIFFEID.String()}}
		} else {
			p.BundleEndpointProfile = &types.FederationRelationship_HttpsWeb{HttpsWeb: &types.HTTPSWebProfile{}}
		}
	}
	if all || mask.TrustDomainBundle {
		if b, err := s.bundles.FetchBundle(ctx, r.TrustDomain); err == nil {
			p.TrustDomainBundle = bundleToProto(b, nil)
		}
	}
	return p
}

// ListFederationRelationships lists relationships by trust domain with paging.
func (s *Service) ListFederationRelationships(ctx context.Context, req *trustdomainv1.ListFederationRelationshipsRequest) (*trustdomainv1.ListFederationRelationshipsResponse, error) {
	if req.PageSize < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", req.PageSize)
	}
	rs, err := s.store.ListFederationRelationships(ctx)
	if err != nil {
		return nil, s.statusFor(ctx, "failed to list federation relationships", err)
	}
	resp := &trustdomainv1.ListFederationRelationshipsResponse{}
	var last string
	for _, r := range rs {
		if req.PageToken != "" && r.TrustDomain.Name() <= req.PageToken {
			continue
		}
		if req.PageSize > 0 && len(resp.FederationRelationships) == int(req.PageSize) {
			resp.NextPageToken = last
			break
		}
		resp.FederationRelationships = append(resp.FederationRelationships, s.relationshipToProto(ctx, r, req.OutputMask))
		last = r.TrustDomain.Name()
	}
	return resp, nil
}

// GetFederationRelationship returns one relationship.
func (s *Service) GetFederationRelationship(ctx context.Context, req *trustdomainv1.GetFederationRelationshipRequest) (*types.FederationRelationship, error) {
	td, err := s.federatedTD(req.TrustDomain)
	if err != nil {
		return nil, err
	}
	r, err := s.store.FetchFederationRelationship(ctx, td)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "federation relationship with %q not found", td)
	}
	if err != nil {
		return nil, s.statusFor(ctx, "failed to fetch federation relationship", err)
	}
	return s.relationshipToProto(ctx, r, req.OutputMask), nil
}

// BatchCreateFederationRelationship creates relationships, each with its own
// result; a given trust_domain_bundle is stored as that trust domain's bundle.
func (s *Service) BatchCreateFederationRelationship(ctx context.Context, req *trustdomainv1.BatchCreateFederationRelationshipRequest) (*trustdomainv1.BatchCreateFederationRelationshipResponse, error) {
	resp := &trustdomainv1.BatchCreateFederationRelationshipResponse{}
	for _, p := range req.FederationRelationships {
		r, b, err := s.relationshipFromProto(p)
		res := &trustdomainv1.BatchCreateFederationRelationshipResponse_Result{}
		switch {
		case err != nil:
			res.Status = apiStatus(codes.InvalidArgument, "failed to convert federation relationship: "+err.Error())
		default:
			err = s.store.CreateFederationRelationship(ctx, r)
			if err == nil && b != nil {
				err = s.setFederatedBundle(ctx, b)
			}
			if err != nil {
				if errors.Is(err, datastore.ErrAlreadyExists) {
					res.Status = apiStatus(codes.AlreadyExists, fmt.Sprintf("federation relationship with %q already exists", r.TrustDomain))
				} else {
					res.Status = statusFromErr(s.statusFor(ctx, "failed to create federation relationship", err))
				}
				break
			}
			res.Status, res.FederationRelationship = okStatus, s.relationshipToProto(ctx, r, req.OutputMask)
			s.log.InfoContext(ctx, "federation relationship created", "trust_domain", r.TrustDomain.Name(), "profile", r.Profile)
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}

// BatchUpdateFederationRelationship updates the fields named by input_mask
// (all when absent), each merged onto the relationship as stored.
func (s *Service) BatchUpdateFederationRelationship(ctx context.Context, req *trustdomainv1.BatchUpdateFederationRelationshipRequest) (*trustdomainv1.BatchUpdateFederationRelationshipResponse, error) {
	resp := &trustdomainv1.BatchUpdateFederationRelationshipResponse{}
	mask := req.InputMask
	all := mask == nil
	for _, p := range req.FederationRelationships {
		res := &trustdomainv1.BatchUpdateFederationRelationshipResponse_Result{}
		resp.Results = append(resp.Results, res)
		td, err := s.federatedTD(p.GetTrustDomain())
		if err != nil {
			res.Status = statusFromErr(err)
			continue
		}
		var refused error
		var newBundle *datastore.Bundle
		updated, err := s.store.UpdateFederationRelationship(ctx, td, func(cur *datastore.FederationRelationship) (*datastore.FederationRelationship, error) {
			merged := s.relationshipToProto(ctx, cur, &types.FederationRelationshipMask{BundleEndpointUrl: true, BundleEndpointProfile: true})
			if all || mask.BundleEndpointUrl {
				merged.BundleEndpointUrl = p.BundleEndpointUrl
			}
			if all || mask.BundleEndpointProfile {
				merged.BundleEndpointProfile = p.BundleEndpointProfile
			}
			if all || mask.TrustDomainBundle {
				merged.TrustDomainBundle = p.TrustDomainBundle
			}
			r, b, err := s.relationshipFromProto(merged)
			if err != nil {
				refused = status.Error(codes.InvalidArgument, "failed to convert federation relationship: "+err.Error())
				return nil, refused
			}
			newBundle = b
			return r, nil
		})
		switch {
		case refused != nil:
			res.Status = statusFromErr(refused)
			continue
		case errors.Is(err, datastore.ErrNotFound):
			res.Status = apiStatus(codes.NotFound, fmt.Sprintf("federation relationship with %q not found", td))
			continue
		case err != nil:
			res.Status = statusFromErr(s.statusFor(ctx, "failed to update federation relationship", err))
			continue
		}
		if newBundle != nil {
			if err := s.setFederatedBundle(ctx, newBundle); err != nil {
				res.Status = statusFromErr(s.statusFor(ctx, "failed to store the trust domain bundle", err))
				continue
			}
		}
		res.Status, res.FederationRelationship = okStatus, s.relationshipToProto(ctx, updated, req.OutputMask)
		s.log.InfoContext(ctx, "federation relationship updated", "trust_domain", td.Name())
	}
	return resp, nil
}

// BatchDeleteFederationRelationship deletes relationships (the trust
// domains' bundles stay: entries may still federate with them).
func (s *Service) BatchDeleteFederationRelationship(ctx context.Context, req *trustdomainv1.BatchDeleteFederationRelationshipRequest) (*trustdomainv1.BatchDeleteFederationRelationshipResponse, error) {
	resp := &trustdomainv1.BatchDeleteFederationRelationshipResponse{}
	for _, name := range req.TrustDomains {
		res := &trustdomainv1.BatchDeleteFederationRelationshipResponse_Result{TrustDomain: name}
		resp.Results = append(resp.Results, res)
		td, err := s.federatedTD(name)
		if err != nil {
			res.Status = statusFromErr(err)
			continue
		}
		switch err := s.store.DeleteFederationRelationship(ctx, td); {
		case errors.Is(err, datastore.ErrNotFound):
			res.Status = apiStatus(codes.NotFound, fmt.Sprintf("federation relationship with %q not found", td))
		case err != nil:
			res.Status = statusFromErr(s.statusFor(ctx, "failed to delete federation relationship", err))
		default:
			res.Status = okStatus
			s.log.InfoContext(ctx, "federation relationship deleted", "trust_domain", td.Name())
		}
	}
	return resp, nil
}

// RefreshBundle fetches the relationship's bundle from its endpoint now and
// stores it; a refused or unreachable endpoint changes nothing. What the
// foreign side did decides the code: an endpoint not reached is Unavailable
// (it may come back), one reached whose identity or document is refused
// (federation.ErrRefused) is FailedPrecondition (asking again gets the same
// until the endpoint or the relationship changes). Only a failure here
// (storing the bundle) is Internal.
func (s *Service) RefreshBundle(ctx context.Context, req *trustdomainv1.RefreshBundleRequest) (*emptypb.Empty, error) {
	td, err := s.federatedTD(req.TrustDomain)
	if err != nil {
		return nil, err
	}
	r, err := s.store.FetchFederationRelationship(ctx, td)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no federation relationship with %q", td)
	}
	if err != nil {
		return nil, s.statusFor(ctx, "failed to fetch federation relationship", err)
	}
	_, err = s.RefreshFederatedBundle(ctx, r)
	var fetchErr *fetchError
	switch {
	case err == nil:
		return &emptypb.Empty{}, nil
	case errors.Is(err, errNoEndpointTrust):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, federation.ErrRefused):
		return nil, status.Errorf(codes.FailedPrecondition, "refreshing the bundle of %q: %v", td, err)
	case errors.As(err, &fetchErr):
		return nil, status.Errorf(codes.Unavailable, "refreshing the bundle of %q: %v", td, err)
	}
	return nil, s.statusFor(ctx, fmt.Sprintf("failed to refresh the bundle of %q", td), err)
}

var errNoEndpointTrust = errors.New("no bundle to authenticate the https_spiffe endpoint with")

// fetchError is federation.Fetch failing, as opposed to this server failing
// to read or store a bundle.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// RefreshFederatedBundle fetches r's bundle from its endpoint and stores it,
// returning the refresh hint the endpoint asked for (zero when none). On any
// error the stored bundle is left as it was. The server's refresher calls it
// for every relationship, the RefreshBundle RPC for one; either way the
// outcome goes to Config.FederationRefreshed.
func (s *Service) RefreshFederatedBundle(ctx context.Context, r *datastore.FederationRelationship) (_ time.Duration, err error) {
	if done := s.cfg.FederationRefreshed; done != nil {
		defer func() { done(r.TrustDomain, err) }()
	}
	var trust x509bundle.Source
	if r.Profile == federation.ProfileHTTPSSPIFFE {
		held, err := s.bundles.FetchBundle(ctx, r.EndpointSPIFFEID.TrustDomain())
		if errors.Is(err, datastore.ErrNotFound) {
			return 0, fmt.Errorf("%w: set a bundle of %q first (bundle set, or the relationship's trust_domain_bundle)", errNoEndpointTrust, r.EndpointSPIFFEID.TrustDomain())
		}
		if err != nil {
			return 0, fmt.Errorf("reading the bundle of %q: %w", r.EndpointSPIFFEID.TrustDomain(), err)
		}
		trust = x509BundleOf(held)
	}
	fetched, err := federation.Fetch(ctx, federation.Endpoint{TrustDomain: r.TrustDomain, URL: r.BundleEndpointURL, Profile: r.Profile, ID: r.EndpointSPIFFEID}, trust, nil)
	if err != nil {
		s.log.WarnContext(ctx, "bundle refresh failed", "trust_domain", r.TrustDomain.Name(), "err", err)
		return 0, &fetchError{err: err}
	}
	if err := s.setFederatedBundle(ctx, federation.DatastoreBundle(r.TrustDomain, fetched)); err != nil {
		return 0, fmt.Errorf("storing the bundle: %w", err)
	}
	hint, _ := fetched.RefreshHint()
	s.log.DebugContext(ctx, "bundle refreshed", "trust_domain", r.TrustDomain.Name())
	return hint, nil
}

// setFederatedBundle stores b as its trust domain's bundle.
func (s *Service) setFederatedBundle(ctx context.Context, b *datastore.Bundle) error {
	_, err := s.bundles.UpdateBundle(ctx, b.TrustDomain, func(*datastore.Bundle) (*datastore.Bundle, error) { return b, nil })
	return err
}

func x509BundleOf(b *datastore.Bundle) *x509bundle.Bundle {
	out := x509bundle.New(b.TrustDomain)
	for _, a := range b.X509Authorities {
		if c, err := x509.ParseCertificate(a.Cert); err == nil {
			out.AddX509Authority(c)
		}
	}
	return out
}
