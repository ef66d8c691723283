package api

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"runtime"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/ca"
)

// maxBatch bounds one BatchNewX509SVID request.
const maxBatch = 1000

func svidSubject(dnsNames []string) pkix.Name {
	n := pkix.Name{Organization: []string{"SPIRE"}, Country: []string{"US"}}
	if len(dnsNames) > 0 {
		n.CommonName = dnsNames[0]
	}
	return n
}

// BatchNewX509SVID signs X509-SVIDs for entries the calling agent is authorized for.
func (s *Service) BatchNewX509SVID(ctx context.Context, req *svidv1.BatchNewX509SVIDRequest) (*svidv1.BatchNewX509SVIDResponse, error) {
	if len(req.Params) > maxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "too many params: %d (at most %d per call)", len(req.Params), maxBatch)
	}
	// Each requested entry is checked on its own: listing the agent's
	// authorized entries would cost its whole set per batch.
	authz := newAuthorizer(s.entries, CallerFrom(ctx).ID)
	now := s.now().Unix()
	results := make([]*svidv1.BatchNewX509SVIDResponse_Result, len(req.Params))
	sign := func(i int) {
		results[i] = s.newX509SVID(ctx, req.Params[i], authz, now)
	}
	// Signing dominates; spread a batch over the cores.
	workers := min(runtime.GOMAXPROCS(0), len(req.Params))
	if workers <= 1 {
		for i := range req.Params {
			sign(i)
		}
	} else {
		var wg sync.WaitGroup
		next := make(chan int)
		for range workers {
			wg.Go(func() {
				for i := range next {
					sign(i)
				}
			})
		}
		for i := range req.Params {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	return &svidv1.BatchNewX509SVIDResponse{Results: results}, nil
}

func (s *Service) newX509SVID(ctx context.Context, p *svidv1.NewX509SVIDParams, authz *authorizer, now int64) *svidv1.BatchNewX509SVIDResponse_Result {
	fail := func(code codes.Code, msg string) *svidv1.BatchNewX509SVIDResponse_Result {
		return &svidv1.BatchNewX509SVIDResponse_Result{Status: apiStatus(code, msg)}
	}
	if p == nil || p.EntryId == "" {
		return fail(codes.InvalidArgument, "missing entry ID")
	}
	e, ok := authz.entry(p.EntryId, now)
	if !ok {
		return fail(codes.NotFound, "entry not found or not authorized")
	}
	csr, err := parseCSR(p.Csr, csrSVID)
	if err != nil {
		return &svidv1.BatchNewX509SVIDResponse_Result{Status: statusFromErr(err)}
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509SVIDParams{
		ID:        e.SPIFFEID,
		PublicKey: csr.PublicKey,
		TTL:       time.Duration(e.X509SVIDTTL) * time.Second,
		DNSNames:  e.DNSNames,
		Subject:   svidSubject(e.DNSNames),
	})
	if err != nil {
		return &svidv1.BatchNewX509SVIDResponse_Result{Status: statusFromErr(s.statusFor(ctx, "failed to sign X509-SVID", err))}
	}
	s.metrics.svids.WithLabelValues("x509").Inc()
	return &svidv1.BatchNewX509SVIDResponse_Result{Status: okStatus, Svid: x509SVIDToProto(e.SPIFFEID, chain, e.Hint)}
}

func validateAudience(aud []string) error {
	if len(aud) == 0 {
		return status.Error(codes.InvalidArgument, "at least one audience is required")
	}
	for _, a := range aud {
		if a == "" {
			return status.Error(codes.InvalidArgument, "audience may not be empty")
		}
	}
	return nil
}

// NewJWTSVID signs a JWT-SVID for an entry the calling agent is authorized for.
func (s *Service) NewJWTSVID(ctx context.Context, req *svidv1.NewJWTSVIDRequest) (*svidv1.NewJWTSVIDResponse, error) {
	if req.EntryId == "" {
		return nil, status.Error(codes.InvalidArgument, "missing entry ID")
	}
	if err := validateAudience(req.Audience); err != nil {
		return nil, err
	}
	entry, ok := newAuthorizer(s.entries, CallerFrom(ctx).ID).entry(req.EntryId, s.now().Unix())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "entry %q not found or not authorized", req.EntryId)
	}
	svid, err := s.signJWT(ctx, entry.SPIFFEID, req.Audience, time.Duration(entry.JWTSVIDTTL)*time.Second, entry.Hint)
	if err != nil {
		return nil, err
	}
	return &svidv1.NewJWTSVIDResponse{Svid: svid}, nil
}

func (s *Service) signJWT(ctx context.Context, id spiffeid.ID, aud []string, ttl time.Duration, hint string) (*types.JWTSVID, error) {
	token, iat, exp, err := s.ca.SignJWTSVID(ctx, id, aud, ttl)
	if err != nil {
		return nil, s.statusFor(ctx, "failed to sign JWT-SVID", err)
	}
	s.metrics.svids.WithLabelValues("jwt").Inc()
	return &types.JWTSVID{Token: token, Id: idToProto(id), ExpiresAt: exp.Unix(), IssuedAt: iat.Unix(), Hint: hint}, nil
}

// MintX509SVID signs an X509-SVID for the SPIFFE ID in the CSR's URI SAN (admin).
func (s *Service) MintX509SVID(ctx context.Context, req *svidv1.MintX509SVIDRequest) (*svidv1.MintX509SVIDResponse, error) {
	csr, err := parseCSR(req.Csr, csrSVID)
	if err != nil {
		return nil, err
	}
	if req.Ttl < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "ttl: %d is negative", req.Ttl)
	}
	if len(csr.URIs) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "CSR must have exactly one URI SAN, has %d", len(csr.URIs))
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR URI SAN is not a SPIFFE ID: %v", err)
	}
	if id.TrustDomain() != s.td {
		return nil, status.Errorf(codes.InvalidArgument, "CSR SPIFFE ID %q is not a member of trust domain %q", id, s.td)
	}
	for _, d := range csr.DNSNames {
		if err := validateDNSName(d); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "CSR DNS name: %v", err)
		}
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509SVIDParams{
		ID: id, PublicKey: csr.PublicKey, TTL: time.Duration(req.Ttl) * time.Second,
		DNSNames: csr.DNSNames, Subject: csrSubject(csr),
	})
	if err != nil {
		return nil, s.statusFor(ctx, "failed to sign X509-SVID", err)
	}
	s.metrics.svids.WithLabelValues("x509").Inc()
	return &svidv1.MintX509SVIDResponse{Svid: x509SVIDToProto(id, chain, "")}, nil
}

func csrSubject(csr *x509.CertificateRequest) pkix.Name {
	if len(csr.Subject.Names) > 0 || csr.Subject.CommonName != "" {
		return csr.Subject
	}
	return svidSubject(csr.DNSNames)
}

// MintJWTSVID signs a JWT-SVID for any SPIFFE ID of the trust domain (admin).
func (s *Service) MintJWTSVID(ctx context.Context, req *svidv1.MintJWTSVIDRequest) (*svidv1.MintJWTSVIDResponse, error) {
	id, err := idFromProto("id", req.Id)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if id.TrustDomain() != s.td {
		return nil, status.Errorf(codes.InvalidArgument, "id: %q is not a member of trust domain %q", id, s.td)
	}
	if err := validateAudience(req.Audience); err != nil {
		return nil, err
	}
	if req.Ttl < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "ttl: %d is negative", req.Ttl)
	}
	svid, err := s.signJWT(ctx, id, req.Audience, time.Duration(req.Ttl)*time.Second, "")
	if err != nil {
		return nil, err
	}
	return &svidv1.MintJWTSVIDResponse{Svid: svid}, nil
}

// NewDownstreamX509CA signs an intermediate CA for a downstream server.
func (s *Service) NewDownstreamX509CA(ctx context.Context, req *svidv1.NewDownstreamX509CARequest) (*svidv1.NewDownstreamX509CAResponse, error) {
	csr, err := parseCSR(req.Csr, csrCA)
	if err != nil {
		return nil, err
	}
	if s.cfg.DownstreamPolicy == nil {
		return nil, status.Error(codes.Unimplemented, "this server signs no downstream CAs")
	}
	ttl, err := s.cfg.DownstreamPolicy(csr, time.Duration(req.PreferredTtl)*time.Second)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, err := s.ca.SignDownstreamX509CA(ctx, csr.PublicKey, ttl)
	if err != nil {
		return nil, s.statusFor(ctx, "failed to sign downstream CA", err)
	}
	resp := &svidv1.NewDownstreamX509CAResponse{}
	for _, c := range chain {
		resp.CaCertChain = append(resp.CaCertChain, c.Raw)
	}
	if b := s.bundles.Own(); b != nil {
		for _, a := range b.X509Authorities {
			resp.X509Authorities = append(resp.X509Authorities, a.Cert)
		}
	}
	s.metrics.svids.WithLabelValues("downstream_ca").Inc()
	s.log.InfoContext(ctx, "downstream CA signed", "spiffe_id", CallerFrom(ctx).ID.String(), "not_after", chain[0].NotAfter)
	return resp, nil
}
