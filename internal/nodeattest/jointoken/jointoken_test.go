package jointoken_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/jointoken"
)

// memTokens is a minimal in-memory datastore.TokenStore.
type memTokens struct {
	mu     sync.Mutex
	tokens map[string]datastore.JoinToken
	err    error // returned by ConsumeJoinToken when set
}

func newMemTokens(ts ...datastore.JoinToken) *memTokens {
	m := &memTokens{tokens: map[string]datastore.JoinToken{}}
	for _, t := range ts {
		m.tokens[t.Token] = t
	}
	return m
}

func (m *memTokens) CreateJoinToken(_ context.Context, t *datastore.JoinToken) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tokens[t.Token]; ok {
		return datastore.ErrAlreadyExists
	}
	m.tokens[t.Token] = *t
	return nil
}

func (m *memTokens) FetchJoinToken(_ context.Context, token string) (*datastore.JoinToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	t, ok := m.tokens[token]
	if !ok {
		return nil, datastore.ErrNotFound
	}
	return &t, nil
}

// consume deletes the token, as the server does when it stores the node.
func (m *memTokens) consume(token string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tokens, token)
}

func (m *memTokens) PruneJoinTokens(_ context.Context, before time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, t := range m.tokens {
		if t.ExpiresAt.Before(before) {
			delete(m.tokens, k)
			n++
		}
	}
	return n, nil
}

func (m *memTokens) has(token string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.tokens[token]
	return ok
}

var (
	td  = spiffeid.RequireTrustDomainFromString("example.org")
	now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

func newAttestor(t *testing.T, store datastore.TokenStore) *jointoken.Attestor {
	t.Helper()
	a, err := jointoken.New(jointoken.Config{TrustDomain: td, Tokens: store, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

func noChallenge(t *testing.T) nodeattest.ChallengeFunc {
	return func(context.Context, []byte) ([]byte, error) {
		t.Error("join_token attestation sent a challenge")
		return nil, errors.New("unexpected challenge")
	}
}

func TestAttest(t *testing.T) {
	const token = "4b2e6c1a-7f0d-4a53-9c0e-2d8a1f5b9e77"
	tests := []struct {
		name      string
		stored    []datastore.JoinToken
		payload   string
		wantID    string
		wantErr   error
		wantStays bool // the token is still stored after the attempt
	}{
		{
			name:      "valid",
			stored:    []datastore.JoinToken{{Token: token, ExpiresAt: now.Add(time.Minute)}},
			payload:   token,
			wantID:    "spiffe://example.org/spire/agent/join_token/" + token,
			wantStays: true, // the server consumes it with the node write
		},
		{
			name:      "expires at this instant",
			stored:    []datastore.JoinToken{{Token: token, ExpiresAt: now}},
			payload:   token,
			wantID:    "spiffe://example.org/spire/agent/join_token/" + token,
			wantStays: true,
		},
		{
			name:      "expired",
			stored:    []datastore.JoinToken{{Token: token, ExpiresAt: now.Add(-time.Second)}},
			payload:   token,
			wantErr:   nodeattest.ErrDenied,
			wantStays: true, // left for pruning
		},
		{
			name:    "unknown",
			stored:  []datastore.JoinToken{{Token: "other", ExpiresAt: now.Add(time.Hour)}},
			payload: token,
			wantErr: nodeattest.ErrDenied,
		},
		{
			name:    "empty",
			payload: "",
			wantErr: nodeattest.ErrInvalid,
		},
		{
			name:      "not a path segment",
			stored:    []datastore.JoinToken{{Token: "a/b", ExpiresAt: now.Add(time.Hour)}},
			payload:   "a/b",
			wantErr:   nodeattest.ErrInvalid,
			wantStays: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			store := newMemTokens(tt.stored...)
			a := newAttestor(t, store)
			if got := a.Type(); got != "join_token" {
				t.Errorf("Type() = %q, want join_token", got)
			}
			res, err := a.Attest(ctx, []byte(tt.payload), noChallenge(t))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Attest(%q) error = %v, want %v", tt.payload, err, tt.wantErr)
			}
			if got := store.has(tt.payload); got != tt.wantStays {
				t.Errorf("after Attest(%q), token stored = %v, want %v", tt.payload, got, tt.wantStays)
			}
			if tt.wantErr != nil {
				if res != nil {
					t.Errorf("Attest(%q) = %+v with error %v, want nil result", tt.payload, res, err)
				}
				if tt.payload != "" && strings.Contains(err.Error(), tt.payload) {
					t.Errorf("Attest error %q leaks the token", err)
				}
				return
			}
			want := &nodeattest.Result{AgentID: spiffeid.RequireFromString(tt.wantID), JoinToken: tt.payload}
			if diff := cmp.Diff(want, res, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })); diff != "" {
				t.Errorf("Attest(%q) mismatch (-want +got):\n%s", tt.payload, diff)
			}
		})
	}
}

func TestAttestUsedTokenIsDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const token = "single-use"
	store := newMemTokens(datastore.JoinToken{Token: token, ExpiresAt: now.Add(time.Hour)})
	a := newAttestor(t, store)
	res, err := a.Attest(ctx, []byte(token), noChallenge(t))
	if err != nil {
		t.Fatalf("first Attest(%q) = %v, want success", token, err)
	}
	store.consume(res.JoinToken)
	if _, err := a.Attest(ctx, []byte(token), noChallenge(t)); !errors.Is(err, nodeattest.ErrDenied) || !errors.Is(err, jointoken.ErrTokenUsed) {
		t.Fatalf("Attest(%q) after it was consumed: error = %v, want %v and %v", token, err, nodeattest.ErrDenied, jointoken.ErrTokenUsed)
	}
}

func TestAttestStoreFailureIsInternal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	boom := errors.New("disk on fire")
	store := newMemTokens()
	store.err = boom
	a := newAttestor(t, store)
	_, err := a.Attest(ctx, []byte("tok"), noChallenge(t))
	if !errors.Is(err, boom) {
		t.Fatalf("Attest error = %v, want wrapping %v", err, boom)
	}
	if errors.Is(err, nodeattest.ErrDenied) || errors.Is(err, nodeattest.ErrInvalid) {
		t.Errorf("Attest error = %v, want neither ErrDenied nor ErrInvalid for a store failure", err)
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		c    jointoken.Config
	}{
		{"no trust domain", jointoken.Config{Tokens: newMemTokens()}},
		{"no store", jointoken.Config{TrustDomain: td}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := jointoken.New(tt.c); err == nil {
				t.Errorf("New(%+v) = nil error, want error", tt.c)
			}
		})
	}
}
