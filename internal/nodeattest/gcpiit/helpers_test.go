package gcpiit_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit/gcpiittest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// now is the clock of every token issued and checked here.
var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

const (
	project   = "payments-prod"
	zone      = "us-central1-a"
	keyID     = "0e8a4c1b2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b"
	otherKey  = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c"
	defaultSA = "web@payments-prod.iam.gserviceaccount.com"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func loadSigner(t testing.TB, file, kid string) *gcpiittest.Signer {
	t.Helper()
	s, err := gcpiittest.LoadSigner(must(os.ReadFile("testdata/"+file)), kid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func value(s string) *string { return &s }

// testInstance is the instance most tests attest.
func testInstance() gcpiittest.Instance {
	return gcpiittest.Instance{
		ProjectID:     project,
		ProjectNumber: 482913775021,
		Zone:          zone,
		ID:            7312554012345678901,
		Name:          "web-1",
		Created:       time.Date(2026, 10, 30, 8, 15, 0, 0, time.UTC),
		ServiceAccounts: []gcpiittest.ServiceAccount{
			{Email: defaultSA, UniqueID: "104532987654321098765"},
			{Email: "metrics@payments-prod.iam.gserviceaccount.com", UniqueID: "104532987654321098766"},
		},
		Labels:   map[string]string{"team": "payments", "env": "prod", "owner": "alice"},
		Metadata: []gcpiittest.MetadataItem{{Key: "role", Value: value("frontend")}, {Key: "ssh-keys", Value: value("alice:ssh-ed25519 AAAA")}, {Key: "empty"}},
		Tags:     []string{"http-server", "https-server"},
	}
}

// fixture is Google (keys and Compute) with the test instance and signer.
type fixture struct {
	signer *gcpiittest.Signer
	google *gcpiittest.Google
	cfg    gcpiit.Config
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{signer: loadSigner(t, "signer.pem", keyID)}
	f.google = gcpiittest.NewGoogle(f.signer)
	t.Cleanup(f.google.Close)
	f.google.SetNow(clock)
	f.google.PutInstance(testInstance())
	f.cfg = gcpiit.Config{
		ProjectIDAllowList: []string{project},
		KeysURL:            f.google.KeysURL(),
		ComputeEndpoint:    f.google.ComputeEndpoint(),
		HTTPClient:         f.google.Client(),
		Now:                clock,
	}
	return f
}

func (f *fixture) attestor(t testing.TB, edit func(*gcpiit.Config)) *gcpiit.Attestor {
	t.Helper()
	cfg := f.cfg
	if edit != nil {
		edit(&cfg)
	}
	a, err := gcpiit.New(cfg, td)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

// token is the full-format token the metadata server issues to inst for
// SPIRE's audience at now, signed by s.
func token(t testing.TB, s *gcpiittest.Signer, inst gcpiittest.Instance) []byte {
	t.Helper()
	return signed(t, s, inst.Claims(nil, gcpiit.Audience, true, false, now))
}

func signed(t testing.TB, s *gcpiittest.Signer, claims any) []byte {
	t.Helper()
	tok, err := s.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok)
}

func noChallenge(context.Context, []byte) ([]byte, error) {
	panic("gcp_iit sends no challenge")
}
