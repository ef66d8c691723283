package ca_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
)

func TestRunRotates(t *testing.T) {
	e := newEnv(t, func(c *ca.Config) { c.RotateInterval = time.Millisecond })
	a, _ := e.m.X509CA()
	srv, err := e.m.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()

	e.clock.Set(lastSixth(a).Add(time.Minute))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st := e.m.Status(); st.NextX509CA != nil && st.NextJWTKey != nil {
			// Prepared late: activation waits for the publish lead.
			e.clock.Set(lastSixth(a).Add(4 * time.Minute))
		}
		cur, _ := e.m.X509CA()
		if !cur.Equal(a) && e.m.Status().JWTKey.NotBefore.After(epoch) {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("Run did not rotate the CA and JWT key within 10s")
		}
		time.Sleep(time.Millisecond) // polling with a deadline, not timing
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return after cancel")
	}
	next, err := e.m.ServerCertificate(nil)
	if err != nil || next == srv {
		t.Errorf("server certificate not re-issued after rotation: %v", err)
	}
}

// TestRunStepsOftenEnoughForShortCAs: without a RotateInterval, Run steps
// often enough for a CA of 30s (a sixtieth of it) to be prepared and
// activated within its last sixth; at the fixed 10s of old, a 30s CA could
// expire with its successor still waiting, which cut a short-lived tier off.
func TestRunStepsOftenEnoughForShortCAs(t *testing.T) {
	e := newEnv(t, func(c *ca.Config) {
		c.CATTL, c.X509SVIDTTL, c.JWTSVIDTTL = 30*time.Second, 5*time.Second, 5*time.Second
	})
	a, _ := e.m.X509CA()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// The CA's clock stands still between the moves below: each change can
	// only come from one of Run's steps, which must come within 5s.
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("Run did not %s within 5s of the moment it was due (CA TTL 30s)", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	e.clock.Set(halfLife(a).Add(time.Second))
	within("prepare the next CA", func() bool { return e.m.Status().NextX509CA != nil })
	e.clock.Set(lastSixth(a).Add(time.Second))
	within("activate the prepared CA", func() bool { cur, _ := e.m.X509CA(); return !cur.Equal(a) })
}

func TestRunBeforeInit(t *testing.T) {
	e := newEnv(t, nil)
	m, err := ca.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Run(ctx); !errors.Is(err, ca.ErrNotInitialized) {
		t.Errorf("Run before Init = %v, want ErrNotInitialized", err)
	}
}

// BenchmarkSignX509SVID signs P-256 SVIDs with a P-256 CA and reports the
// cost relative to one bare ECDSA P-256 signature measured in the same run.
func BenchmarkSignX509SVID(b *testing.B) {
	e := newEnv(b, nil)
	key := mustKey(b, ca.KeyTypeECP256)
	p := ca.X509SVIDParams{ID: spiffeid.RequireFromPath(td, "/bench"), PublicKey: key.Public()}
	ctx := context.Background()

	digest := make([]byte, 32)
	const baseN = 200
	t0 := time.Now()
	for range baseN {
		if _, err := key.Sign(rand.Reader, digest, crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	baseline := time.Since(t0) / baseN

	b.ReportAllocs()
	b.ResetTimer()
	var last []*x509.Certificate
	for b.Loop() {
		certs, err := e.m.SignX509SVID(ctx, p)
		if err != nil {
			b.Fatal(err)
		}
		last = certs
	}
	b.StopTimer()
	if len(last) != 1 {
		b.Fatalf("chain length %d", len(last))
	}
	perOp := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perOp)/float64(baseline), "x-ecdsa-sign")
}
