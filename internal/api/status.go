package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
)

// statusFor turns an error of the CA or the datastore into the gRPC status a
// caller gets: what the error says about the request (invalid, missing,
// conflicting, refused) with its message; anything else is logged and
// becomes Internal with only what, never the cause. An error that already is
// a status passes through.
func (s *Service) statusFor(ctx context.Context, what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ca.ErrInvalidArgument):
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	case errors.Is(err, ca.ErrNotInitialized):
		return status.Errorf(codes.Unavailable, "%s: the CA is not initialized yet; retry later", what)
	case errors.Is(err, datastore.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: not found", what)
	case errors.Is(err, datastore.ErrAlreadyExists):
		return status.Errorf(codes.AlreadyExists, "%s: already exists", what)
	case errors.Is(err, datastore.ErrConflict):
		return status.Errorf(codes.Aborted, "%s: changed concurrently; retry", what)
	case errors.Is(err, datastore.ErrBanned):
		return status.Errorf(codes.PermissionDenied, "%s: agent is banned", what)
	}
	return s.internalError(ctx, what, err)
}
