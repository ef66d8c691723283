package jointoken_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/jointoken"
)

// FuzzAttest sends arbitrary payloads to the server side of join_token
// attestation, with the payload stored as a token (live or expired) or not.
// Attest must never panic nor send a challenge; it must refuse with exactly
// one of ErrInvalid and ErrDenied, in one of a fixed set of messages (so no
// message carries the token), and accept exactly a stored, live token that
// is a valid path segment, as the agent ID .../spire/agent/join_token/<token>.
func FuzzAttest(f *testing.F) {
	for _, s := range []string{
		"4b2e6c1a-7f0d-4a53-9c0e-2d8a1f5b9e77", "t", "", "a/b", ".", "..", "a b", "%41", "tok\x00en", "日本",
		"0123456789012345678901234567890123456789012345678901234567890123456789",
	} {
		for _, stored := range []bool{false, true} {
			f.Add([]byte(s), stored, false)
			f.Add([]byte(s), stored, true)
		}
	}

	// The messages Attest may refuse with: none names a token.
	ctx := context.Background()
	messages := map[string]bool{}
	for _, probe := range []struct {
		token   string
		stored  bool
		expired bool
	}{{"", false, false}, {"a/b", true, false}, {"unknown", false, false}, {"old", true, true}} {
		_, err := attestOnce(ctx, probe.token, probe.stored, probe.expired)
		if err == nil {
			f.Fatalf("Attest(%q) succeeded, want an error", probe.token)
		}
		messages[err.Error()] = true
	}

	f.Fuzz(func(t *testing.T, payload []byte, stored, expired bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		token := string(payload)
		res, err := attestOnce(ctx, token, stored, expired)
		shouldAccept := stored && !expired && spiffeid.ValidatePathSegment(token) == nil
		if err != nil {
			invalid, denied := errors.Is(err, nodeattest.ErrInvalid), errors.Is(err, nodeattest.ErrDenied)
			if invalid == denied {
				t.Fatalf("Attest(%q) = %v, want exactly one of ErrInvalid and ErrDenied", token, err)
			}
			if res != nil {
				t.Fatalf("Attest(%q) = %+v with error %v, want a nil result", token, res, err)
			}
			if !messages[err.Error()] {
				t.Fatalf("Attest(%q) error %q is not one of the fixed messages %v", token, err, messages)
			}
			if shouldAccept {
				t.Fatalf("Attest(%q) of a stored live token = %v, want success", token, err)
			}
			return
		}
		if !shouldAccept {
			t.Fatalf("Attest(%q) (stored %v, expired %v) = %+v, want an error", token, stored, expired, res)
		}
		want, err := jointoken.AgentID(td, token)
		if err != nil {
			t.Fatalf("AgentID(%q) = %v after Attest accepted it", token, err)
		}
		if res.AgentID != want || res.JoinToken != token || len(res.Selectors) != 0 || res.CanReattest {
			t.Fatalf("Attest(%q) = %+v, want agent ID %q, the token, no selectors, no re-attestation", token, res, want)
		}
		if err := idpolicy.AgentID(td, res.AgentID); err != nil {
			t.Fatalf("Attest(%q) returned agent ID %q outside the agent namespace: %v", token, res.AgentID, err)
		}
	})
}

// attestOnce attests token against a store that holds it (live, or expired
// a second ago) when stored is set.
func attestOnce(ctx context.Context, token string, stored, expired bool) (*nodeattest.Result, error) {
	var held []datastore.JoinToken
	if stored {
		expiry := now.Add(time.Hour)
		if expired {
			expiry = now.Add(-time.Second)
		}
		held = append(held, datastore.JoinToken{Token: token, ExpiresAt: expiry})
	}
	store := newMemTokens(held...)
	a, err := jointoken.New(jointoken.Config{TrustDomain: td, Tokens: store, Now: func() time.Time { return now }})
	if err != nil {
		return nil, err
	}
	return a.Attest(ctx, []byte(token), func(context.Context, []byte) ([]byte, error) {
		panic("join_token attestation sent a challenge")
	})
}
