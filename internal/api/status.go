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
// conflicting, refused) with its message; a datastore that cannot be reached
// is Unavailable (the caller retries; see unavailable); anything else is
// logged and becomes Internal with only what, never the cause. An error that
// already is a status passes through.
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

// unavailable is the status of a call that needed the datastore while it
// could not be reached: Unavailable, which gRPC clients and agents retry,
// saying only that, never the driver's message (it names hosts and users);
// the cause is logged with the request's context. Every path that would
// answer Internal goes through internalError, which sends a
// datastore.ErrUnavailable here, so an outage never becomes Internal.
func (s *Service) unavailable(ctx context.Context, what string, err error) error {
	s.storeDown(err)
	s.log.DebugContext(ctx, what+": datastore unavailable", "err", err)
	return status.Errorf(codes.Unavailable, "%s: datastore unavailable; retry", what)
}
