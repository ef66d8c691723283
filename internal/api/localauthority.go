package api

// spire.api.server.localauthority.v1: the tier's X.509 CAs and JWT keys as
// an operator prepares, activates, taints and revokes them (the CA manager's
// state machine, internal/ca/authority.go). Refusals carry SPIRE's codes and
// words, except where SPIRE answers a refused request with Internal: there
// the code is the one the proto documents or the one SPIRE's datastore
// meant (FailedPrecondition for an authority in the wrong state,
// InvalidArgument or NotFound for a taint or revoke the bundle refuses).

import (
	"context"
	"errors"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
)

// LocalAuthorities is what the localauthority service needs from the CA
// manager.
type LocalAuthorities interface {
	X509AuthorityStates() (ca.AuthorityStates, error)
	PrepareX509Authority(ctx context.Context) (*ca.AuthorityState, error)
	ActivateX509Authority(ctx context.Context, id string) (*ca.AuthorityState, error)
	TaintX509Authority(ctx context.Context, id string) (*ca.AuthorityState, error)
	RevokeX509Authority(ctx context.Context, id string) (*ca.AuthorityState, error)
	TaintX509UpstreamAuthority(ctx context.Context, skid string) (string, error)
	RevokeX509UpstreamAuthority(ctx context.Context, skid string) (string, error)

	JWTAuthorityStates() (ca.AuthorityStates, error)
	PrepareJWTAuthority(ctx context.Context) (*ca.AuthorityState, error)
	ActivateJWTAuthority(ctx context.Context, id string) (*ca.AuthorityState, error)
	TaintJWTAuthority(ctx context.Context, id string) (*ca.AuthorityState, error)
	RevokeJWTAuthority(ctx context.Context, id string) (*ca.AuthorityState, error)
}

var _ LocalAuthorities = (*ca.Manager)(nil)

// localAuthority serves localauthority.v1 from the service's CA.
type localAuthority struct {
	localauthorityv1.UnimplementedLocalAuthorityServer
	s  *Service
	la LocalAuthorities
}

// errNoLocalAuthority answers every call of a service built without the
// CA manager.
var errNoLocalAuthority = status.Error(codes.Unimplemented, "this server does not manage its authorities through the local authority API")

func (l *localAuthority) fail(ctx context.Context, what string, err error) error {
	var ae *ca.AuthorityError
	if errors.As(err, &ae) {
		code := codes.Internal
		switch {
		case errors.Is(err, ca.ErrInvalidArgument):
			code = codes.InvalidArgument
		case errors.Is(err, ca.ErrFailedPrecondition):
			code = codes.FailedPrecondition
		case errors.Is(err, ca.ErrAuthorityNotFound):
			code = codes.NotFound
		case errors.Is(err, ca.ErrNotInitialized):
			code = codes.Unavailable
		case errors.Is(err, datastore.ErrUnavailable):
			return l.s.unavailable(ctx, "failed to "+what, err)
		}
		l.s.log.WarnContext(ctx, "local authority: "+what+" refused", "reason", ae.Reason, "code", code.String())
		return status.Error(code, ae.Reason)
	}
	return l.s.internalError(ctx, "failed to "+what, err)
}

func stateToProto(st *ca.AuthorityState) *localauthorityv1.AuthorityState {
	if st == nil {
		return nil
	}
	p := &localauthorityv1.AuthorityState{AuthorityId: st.AuthorityID, UpstreamAuthoritySubjectKeyId: st.UpstreamAuthorityID}
	if !st.ExpiresAt.IsZero() {
		p.ExpiresAt = st.ExpiresAt.Unix()
	}
	return p
}

func (l *localAuthority) GetX509AuthorityState(ctx context.Context, _ *localauthorityv1.GetX509AuthorityStateRequest) (*localauthorityv1.GetX509AuthorityStateResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.X509AuthorityStates()
	if err != nil {
		return nil, l.fail(ctx, "get X.509 authority state", err)
	}
	return &localauthorityv1.GetX509AuthorityStateResponse{Active: stateToProto(st.Active), Prepared: stateToProto(st.Prepared), Old: stateToProto(st.Old)}, nil
}

func (l *localAuthority) PrepareX509Authority(ctx context.Context, _ *localauthorityv1.PrepareX509AuthorityRequest) (*localauthorityv1.PrepareX509AuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.PrepareX509Authority(ctx)
	if err != nil {
		return nil, l.fail(ctx, "prepare X.509 authority", err)
	}
	l.s.log.InfoContext(ctx, "X.509 authority prepared", "local_authority_id", st.AuthorityID)
	return &localauthorityv1.PrepareX509AuthorityResponse{PreparedAuthority: stateToProto(st)}, nil
}

func (l *localAuthority) ActivateX509Authority(ctx context.Context, req *localauthorityv1.ActivateX509AuthorityRequest) (*localauthorityv1.ActivateX509AuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.ActivateX509Authority(ctx, req.AuthorityId)
	if err != nil {
		return nil, l.fail(ctx, "activate X.509 authority", err)
	}
	return &localauthorityv1.ActivateX509AuthorityResponse{ActivatedAuthority: stateToProto(st)}, nil
}

func (l *localAuthority) TaintX509Authority(ctx context.Context, req *localauthorityv1.TaintX509AuthorityRequest) (*localauthorityv1.TaintX509AuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.TaintX509Authority(ctx, req.AuthorityId)
	if err != nil {
		return nil, l.fail(ctx, "taint X.509 authority", err)
	}
	return &localauthorityv1.TaintX509AuthorityResponse{TaintedAuthority: stateToProto(st)}, nil
}

func (l *localAuthority) RevokeX509Authority(ctx context.Context, req *localauthorityv1.RevokeX509AuthorityRequest) (*localauthorityv1.RevokeX509AuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.RevokeX509Authority(ctx, req.AuthorityId)
	if err != nil {
		return nil, l.fail(ctx, "revoke X.509 authority", err)
	}
	return &localauthorityv1.RevokeX509AuthorityResponse{RevokedAuthority: &localauthorityv1.AuthorityState{AuthorityId: st.AuthorityID}}, nil
}

func (l *localAuthority) TaintX509UpstreamAuthority(ctx context.Context, req *localauthorityv1.TaintX509UpstreamAuthorityRequest) (*localauthorityv1.TaintX509UpstreamAuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	skid, err := l.la.TaintX509UpstreamAuthority(ctx, req.SubjectKeyId)
	if err != nil {
		return nil, l.fail(ctx, "taint upstream authority", err)
	}
	return &localauthorityv1.TaintX509UpstreamAuthorityResponse{UpstreamAuthoritySubjectKeyId: skid}, nil
}

func (l *localAuthority) RevokeX509UpstreamAuthority(ctx context.Context, req *localauthorityv1.RevokeX509UpstreamAuthorityRequest) (*localauthorityv1.RevokeX509UpstreamAuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	skid, err := l.la.RevokeX509UpstreamAuthority(ctx, req.SubjectKeyId)
	if err != nil {
		return nil, l.fail(ctx, "revoke X.509 upstream authority", err)
	}
	return &localauthorityv1.RevokeX509UpstreamAuthorityResponse{UpstreamAuthoritySubjectKeyId: skid}, nil
}

func (l *localAuthority) GetJWTAuthorityState(ctx context.Context, _ *localauthorityv1.GetJWTAuthorityStateRequest) (*localauthorityv1.GetJWTAuthorityStateResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.JWTAuthorityStates()
	if err != nil {
		return nil, l.fail(ctx, "get JWT authority state", err)
	}
	return &localauthorityv1.GetJWTAuthorityStateResponse{Active: stateToProto(st.Active), Prepared: stateToProto(st.Prepared), Old: stateToProto(st.Old)}, nil
}

func (l *localAuthority) PrepareJWTAuthority(ctx context.Context, _ *localauthorityv1.PrepareJWTAuthorityRequest) (*localauthorityv1.PrepareJWTAuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.PrepareJWTAuthority(ctx)
	if err != nil {
		return nil, l.fail(ctx, "prepare JWT authority", err)
	}
	return &localauthorityv1.PrepareJWTAuthorityResponse{PreparedAuthority: stateToProto(st)}, nil
}

func (l *localAuthority) ActivateJWTAuthority(ctx context.Context, req *localauthorityv1.ActivateJWTAuthorityRequest) (*localauthorityv1.ActivateJWTAuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.ActivateJWTAuthority(ctx, req.AuthorityId)
	if err != nil {
		return nil, l.fail(ctx, "activate JWT authority", err)
	}
	return &localauthorityv1.ActivateJWTAuthorityResponse{ActivatedAuthority: stateToProto(st)}, nil
}

func (l *localAuthority) TaintJWTAuthority(ctx context.Context, req *localauthorityv1.TaintJWTAuthorityRequest) (*localauthorityv1.TaintJWTAuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.TaintJWTAuthority(ctx, req.AuthorityId)
	if err != nil {
		return nil, l.fail(ctx, "taint JWT authority", err)
	}
	return &localauthorityv1.TaintJWTAuthorityResponse{TaintedAuthority: stateToProto(st)}, nil
}

func (l *localAuthority) RevokeJWTAuthority(ctx context.Context, req *localauthorityv1.RevokeJWTAuthorityRequest) (*localauthorityv1.RevokeJWTAuthorityResponse, error) {
	if l.la == nil {
		return nil, errNoLocalAuthority
	}
	st, err := l.la.RevokeJWTAuthority(ctx, req.AuthorityId)
	if err != nil {
		return nil, l.fail(ctx, "revoke JWT authority", err)
	}
	return &localauthorityv1.RevokeJWTAuthorityResponse{RevokedAuthority: stateToProto(st)}, nil
}
