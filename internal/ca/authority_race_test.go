package ca_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/ca"
)

// TestTaintSurvivesConcurrentRotation: while rotation steps run (the clock
// crossing the next preparation and activation points, so that they write
// the bundle) and manual JWT preparations race with them, the old X.509 CA
// and the old JWT key are tainted; every taint that succeeded is in the
// bundle afterwards, nothing else is tainted, and the state machine is
// consistent (no authority both active and old).
func TestTaintSurvivesConcurrentRotation(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, _ := e.m.X509CA()
	prep, err := e.m.PrepareX509Authority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.ActivateX509Authority(ctx, prep.AuthorityID); err != nil {
		t.Fatal(err)
	}
	jst, _ := e.m.JWTAuthorityStates()
	oldKID := jst.Active.AuthorityID
	jprep, err := e.m.PrepareJWTAuthority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.ActivateJWTAuthority(ctx, jprep.AuthorityID); err != nil {
		t.Fatal(err)
	}
	cur, _ := e.m.X509CA()

	var wg sync.WaitGroup
	var x509Err, jwtErr error
	start := make(chan struct{})
	wg.Go(func() {
		<-start
		// Walk the clock through the active CA's half-life and activation
		// point: the steps prepare and then activate, writing the bundle.
		for _, at := range []time.Time{halfLife(cur), halfLife(cur).Add(time.Minute), lastSixth(cur).Add(time.Second), lastSixth(cur).Add(time.Hour)} {
			e.clock.Set(at)
			for range 5 {
				if err := e.m.Rotate(ctx); err != nil {
					t.Errorf("Rotate: %v", err)
				}
			}
		}
	})
	wg.Go(func() {
		<-start
		for range 5 {
			if _, err := e.m.PrepareJWTAuthority(ctx); err != nil {
				t.Errorf("PrepareJWTAuthority: %v", err)
			}
		}
	})
	wg.Go(func() {
		<-start
		_, x509Err = e.m.TaintX509Authority(ctx, ca.SubjectKeyID(first))
	})
	wg.Go(func() {
		<-start
		_, jwtErr = e.m.TaintJWTAuthority(ctx, oldKID)
	})
	close(start)
	wg.Wait()

	b := e.bundles.bundle(t, td)
	for _, a := range b.X509Authorities {
		isFirst := bytes.Equal(a.Cert, first.Raw)
		switch {
		case isFirst && x509Err == nil && !a.Tainted:
			t.Error("the X.509 taint succeeded but the bundle holds the old CA untainted")
		case !isFirst && a.Tainted:
			t.Error("an X.509 authority other than the tainted one is tainted")
		}
	}
	var ae *ca.AuthorityError
	if x509Err != nil && (!errors.As(x509Err, &ae) || !errors.Is(x509Err, ca.ErrInvalidArgument)) {
		t.Errorf("TaintX509Authority = %v, want success or a refusal (the rotation replaced the old CA first)", x509Err)
	}
	for _, k := range b.JWTAuthorities {
		switch {
		case k.KeyID == oldKID && jwtErr == nil && !k.Tainted:
			t.Error("the JWT taint succeeded but the bundle holds the old key untainted")
		case k.KeyID != oldKID && k.Tainted:
			t.Errorf("JWT key %s is tainted, only %s was", k.KeyID, oldKID)
		}
	}
	if jwtErr != nil && !errors.Is(jwtErr, ca.ErrInvalidArgument) {
		t.Errorf("TaintJWTAuthority = %v, want success or a refusal", jwtErr)
	}
	xs, _ := e.m.X509AuthorityStates()
	if xs.Old != nil && xs.Old.AuthorityID == xs.Active.AuthorityID {
		t.Errorf("X.509 state %+v has one authority both active and old", xs)
	}
	t.Logf("X.509 taint: %v; JWT taint: %v", x509Err, jwtErr)
}
