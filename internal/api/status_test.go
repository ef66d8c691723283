package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/datastore"
)

// TestStatusForDatastoreUnavailable: a datastore outage is Unavailable on
// every mapping path (statusFor, and internalError, which the handlers that
// do not use statusFor call), says to retry, leaks nothing of the cause, and
// marks the datastore down until a poll succeeds.
func TestStatusForDatastoreUnavailable(t *testing.T) {
	cause := errors.New("failed to connect to `user=arbor database=arbor`: 10.1.2.3:5432: connection refused")
	outage := fmt.Errorf("postgres: create entries: %w: %w", datastore.ErrUnavailable, cause)
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
	}{
		{"outage", outage, codes.Unavailable},
		{"outage wrapped again", fmt.Errorf("api: fetching entry e1: %w", outage), codes.Unavailable},
		{"not found", fmt.Errorf("postgres: fetch entry: %w", datastore.ErrNotFound), codes.NotFound},
		{"other", errors.New("postgres: scan entry: bad column"), codes.Internal},
	}
	for _, tt := range tests {
		for _, via := range []string{"statusFor", "internalError"} {
			s := &Service{log: slog.New(slog.DiscardHandler), metrics: newMetrics(nil)}
			var err error
			if via == "statusFor" {
				err = s.statusFor(context.Background(), "failed to create entry", tt.err)
			} else {
				if tt.wantCode == codes.NotFound {
					continue // internalError does not map refusals
				}
				err = s.internalError(context.Background(), "failed to create entry", tt.err)
			}
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Errorf("%s(%s) = %v, want %v", via, tt.name, st.Code(), tt.wantCode)
			}
			if strings.Contains(st.Message(), "10.1.2.3") || strings.Contains(st.Message(), "user=") {
				t.Errorf("%s(%s) message %q leaks the cause", via, tt.name, st.Message())
			}
			up := s.DatastoreHealth().Up
			if tt.wantCode == codes.Unavailable {
				if want := "failed to create entry: datastore unavailable; retry"; st.Message() != want {
					t.Errorf("%s(%s) message = %q, want %q", via, tt.name, st.Message(), want)
				}
				if up {
					t.Errorf("%s(%s): DatastoreHealth().Up = true after an outage error", via, tt.name)
				}
				s.storeUp()
				if !s.DatastoreHealth().Up {
					t.Errorf("%s(%s): DatastoreHealth().Up = false after a successful poll", via, tt.name)
				}
			} else if !up {
				t.Errorf("%s(%s): DatastoreHealth().Up = false after an error that is no outage", via, tt.name)
			}
		}
	}
}
