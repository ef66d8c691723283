package api

import (
	"context"
	"errors"
	"strconv"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/arborid/arbor/internal/ca"
)

// SPIRE's bundle.v1 has no call that removes expired authorities from the own
// bundle, so arbor serves one of its own on the admin socket, described by
// hand below with existing message types (no generated code): the request is
// a google.protobuf.Duration, the grace period; the response the bundle after
// pruning, with the counts of removed authorities in the response header.
const (
	// PruneBundleMethod is the full gRPC method name of the prune call.
	PruneBundleMethod = "/" + pruneServiceName + "/PruneBundle"
	// PrunedX509Header and PrunedJWTHeader are response header keys holding
	// how many X.509 and JWT authorities the call removed (decimal).
	PrunedX509Header = "arbor-pruned-x509"
	PrunedJWTHeader  = "arbor-pruned-jwt"

	pruneServiceName = "arbor.admin.v1.Bundle"
)

// pruneServer is the handler type of pruneServiceDesc.
type pruneServer interface {
	PruneBundle(ctx context.Context, grace *durationpb.Duration) (*types.Bundle, error)
}

var pruneServiceDesc = grpc.ServiceDesc{
	ServiceName: pruneServiceName,
	HandlerType: (*pruneServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "PruneBundle", Handler: pruneBundleHandler}},
	Metadata:    "internal/api/prune.go",
}

func pruneBundleHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(durationpb.Duration)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(pruneServer)
	if interceptor == nil {
		return s.PruneBundle(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: PruneBundleMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.PruneBundle(ctx, req.(*durationpb.Duration))
	})
}

// PruneBundle removes from the own bundle the X.509 and JWT authorities that
// expired more than grace ago (zero: every expired one), except those the
// CA holds, and returns the bundle.
func (s *Service) PruneBundle(ctx context.Context, grace *durationpb.Duration) (*types.Bundle, error) {
	if err := grace.CheckValid(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "grace period: %v", err)
	}
	d := grace.AsDuration()
	if d < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "grace period %v is negative", d)
	}
	if s.cfg.PruneBundle == nil {
		return nil, status.Error(codes.Unimplemented, "this server's CA cannot prune its bundle")
	}
	res, err := s.cfg.PruneBundle(ctx, d)
	switch {
	case errors.Is(err, ca.ErrInvalidArgument):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ca.ErrNotInitialized):
		return nil, status.Error(codes.Unavailable, "the CA is not initialized yet; retry later")
	case err != nil:
		return nil, s.internalError(ctx, "failed to prune bundle", err)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(PrunedX509Header, strconv.Itoa(res.X509), PrunedJWTHeader, strconv.Itoa(res.JWT)))
	s.log.InfoContext(ctx, "bundle pruned", "grace", d, "x509_pruned", res.X509, "jwt_pruned", res.JWT)
	b := s.bundles.Own()
	if b == nil {
		return nil, status.Error(codes.NotFound, "bundle not found")
	}
	return bundleToProto(b, nil), nil
}
