package ca_test

import (
	"context"
	"crypto"
	"errors"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/root"
	"github.com/arborid/arbor/upstream"
)

// publishingUpstream is a self-signed upstream whose JWT publishing can fail,
// as a downstream tier's does while its parent is unreachable.
type publishingUpstream struct {
	*root.SelfSigned
	failing *bool
}

func (p publishingUpstream) MintX509CA(ctx context.Context, k crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
	return p.SelfSigned.MintX509CA(ctx, k, ttl)
}

func (p publishingUpstream) PublishJWTKey(ctx context.Context, k upstream.JWTKey) ([]upstream.JWTKey, error) {
	if *p.failing {
		return nil, errors.New("parent unreachable")
	}
	return []upstream.JWTKey{k}, nil
}

// TestJWTKeyPreparedLateIsPublishedBeforeUse: when the next JWT key can only
// be prepared after the activation point (the parent was unreachable), it is
// not used in the step that prepared it: verifiers on other tiers get the
// publish lead to learn it, while the active key is still valid.
func TestJWTKeyPreparedLateIsPublishedBeforeUse(t *testing.T) {
	failing := false
	e := newEnv(t, func(c *ca.Config) {
		p := publishingUpstream{SelfSigned: c.Upstream.(*root.SelfSigned), failing: &failing}
		c.Upstream, c.JWTPublisher = p, p
	})
	first := e.m.Status().JWTKey
	failing = true
	e.clock.Set(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 5 / 6).Add(time.Minute))
	if err := e.m.Rotate(context.Background()); err == nil {
		t.Fatal("Rotate with the parent unreachable succeeded")
	}
	failing = false
	late := e.clock.Now().Add(time.Minute)
	e.rotateAt(t, late)
	st := e.m.Status()
	if st.JWTKey.KeyID != first.KeyID || st.NextJWTKey == nil {
		t.Fatalf("right after a late preparation: active %s next %v; want the old key active and the new one prepared", st.JWTKey.KeyID, st.NextJWTKey)
	}
	e.rotateAt(t, late.Add(2*time.Minute+time.Second))
	if got := e.m.Status().JWTKey.KeyID; got == first.KeyID {
		t.Fatal("the late key was not activated after the publish lead")
	}
}
