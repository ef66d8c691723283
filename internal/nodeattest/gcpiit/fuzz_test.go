package gcpiit

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit/gcpiittest"
)

// FuzzVerifyToken sends arbitrary bytes to the token parser and verifier,
// with one known key. Seeded (here and in testdata/fuzz/FuzzVerifyToken)
// with a token Google's format signed by that key, which verifies, and the
// ways it can be malformed. It must never panic; every refusal is
// ErrInvalid or ErrDenied under the gcpiit: prefix, never both; what it
// accepts carries the whole google.compute_engine claim.
func FuzzVerifyToken(f *testing.F) {
	signer, err := gcpiittest.NewSigner("k1")
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	inst := gcpiittest.Instance{ProjectID: "payments-prod", ProjectNumber: 482913775021, Zone: "us-central1-a",
		ID: 7312554012345678901, Name: "web-1", Created: now.Add(-48 * time.Hour),
		ServiceAccounts: []gcpiittest.ServiceAccount{{Email: "web@payments-prod.iam.gserviceaccount.com", UniqueID: "104532987654321098765"}}}
	good, err := signer.Sign(inst.Claims(nil, "spire-gcp-node-attestor", true, false, now))
	if err != nil {
		f.Fatal(err)
	}
	thin, err := signer.Sign(inst.Claims(nil, "spire-gcp-node-attestor", false, false, now))
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	for _, seed := range []string{good, thin, parts[0] + "." + parts[1] + ".", parts[0] + "..", good + ".x",
		strings.Replace(good, ".", ".\n", 1), "a.b.c", ""} {
		f.Add([]byte(seed))
	}
	keys := func(_ context.Context, kid string) (*rsa.PublicKey, error) {
		if kid == "k1" {
			return &signer.Key.PublicKey, nil
		}
		return nil, fmt.Errorf("gcpiit: %w: no key %q", nodeattest.ErrDenied, kid)
	}
	ctx := context.Background()
	if _, err := verifyToken(ctx, []byte(good), keys, now); err != nil {
		f.Fatalf("the seed token does not verify: %v", err)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok, err := verifyToken(ctx, payload, keys, now)
		if err != nil {
			invalid, denied := errors.Is(err, nodeattest.ErrInvalid), errors.Is(err, nodeattest.ErrDenied)
			if invalid == denied {
				t.Fatalf("verifyToken(%q) = %v, want exactly one of ErrInvalid and ErrDenied", payload, err)
			}
			if !strings.HasPrefix(err.Error(), "gcpiit: ") {
				t.Fatalf("verifyToken() error %q lacks the gcpiit: prefix", err)
			}
			if tok != nil {
				t.Fatalf("verifyToken(%q) returned a token with error %v", payload, err)
			}
			return
		}
		if len(payload) > maxPayload {
			t.Fatalf("verifyToken() accepted %d bytes, more than %d", len(payload), maxPayload)
		}
		ce := tok.Google.ComputeEngine
		if ce.ProjectID == "" || ce.InstanceID == "" || ce.Zone == "" || ce.InstanceName == "" {
			t.Fatalf("verifyToken(%q) accepted a token without the whole compute_engine claim: %+v", payload, ce)
		}
	})
}
