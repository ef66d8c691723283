package gcpiit_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit/gcpiittest"
)

func selectorValues(res *nodeattest.Result) []string {
	var out []string
	for _, s := range res.Selectors {
		out = append(out, s.String())
	}
	return out
}

// TestAttest: a token for an allowed project attests, without a Compute
// call, as SPIRE's default agent ID with the three token selectors, trust
// on first use.
func TestAttest(t *testing.T) {
	f := newFixture(t)
	res, err := f.attestor(t, nil).Attest(testContext(t), token(t, f.signer, testInstance()), noChallenge)
	if err != nil {
		t.Fatalf("Attest() = %v", err)
	}
	if want := "spiffe://example.org/spire/agent/gcp_iit/payments-prod/7312554012345678901"; res.AgentID.String() != want {
		t.Errorf("agent ID = %s, want %s", res.AgentID, want)
	}
	want := []string{"gcp_iit:instance-name:web-1", "gcp_iit:project-id:payments-prod", "gcp_iit:zone:us-central1-a"}
	if diff := cmp.Diff(want, selectorValues(res)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if !res.FirstUse || res.CanReattest || res.JoinToken != "" {
		t.Errorf("Attest() = FirstUse %v, CanReattest %v, JoinToken %q; want trust on first use only", res.FirstUse, res.CanReattest, res.JoinToken)
	}
	if calls, _ := f.google.ComputeCalls(); calls != 0 {
		t.Errorf("Compute calls = %d without use_instance_metadata, want 0", calls)
	}
}

// TestAttestInstanceMetadata: with use_instance_metadata the instance is
// read (without credentials, the client being the fake's) and adds its
// network tags, service accounts, and the allowed labels and metadata.
func TestAttestInstanceMetadata(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, func(c *gcpiit.Config) {
		c.UseInstanceMetadata = true
		c.AllowedLabelKeys = []string{"team", "env"}
		c.AllowedMetadataKeys = []string{"role", "empty", "absent"}
	})
	res, err := a.Attest(testContext(t), token(t, f.signer, testInstance()), noChallenge)
	if err != nil {
		t.Fatalf("Attest() = %v", err)
	}
	want := []string{
		"gcp_iit:instance-name:web-1",
		"gcp_iit:label:env:prod",
		"gcp_iit:label:team:payments",
		"gcp_iit:metadata:empty:",
		"gcp_iit:metadata:role:frontend",
		"gcp_iit:project-id:payments-prod",
		"gcp_iit:sa:metrics@payments-prod.iam.gserviceaccount.com",
		"gcp_iit:sa:web@payments-prod.iam.gserviceaccount.com",
		"gcp_iit:tag:http-server",
		"gcp_iit:tag:https-server",
		"gcp_iit:zone:us-central1-a",
	}
	if diff := cmp.Diff(want, selectorValues(res)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if calls, auth := f.google.ComputeCalls(); calls != 1 || auth != 0 {
		t.Errorf("Compute calls = %d (%d with Authorization), want 1 without credentials", calls, auth)
	}
}

// TestAttestRefusals: every way a token or an instance fails, and the
// error class the API layer maps to a status.
func TestAttestRefusals(t *testing.T) {
	f := newFixture(t)
	other := loadSigner(t, "other-signer.pem", otherKey)
	inst := testInstance()
	claims := func(edit func(*gcpiittest.Claims)) gcpiittest.Claims {
		c := inst.Claims(nil, gcpiit.Audience, true, false, now)
		edit(&c)
		return c
	}
	good := token(t, f.signer, inst)
	segments := strings.Split(string(good), ".")
	anotherProject := inst
	anotherProject.ProjectID = "attacker-project"
	// A published key ID on a signature by another key.
	forged := &gcpiittest.Signer{Key: other.Key, KeyID: keyID}

	tests := []struct {
		name    string
		payload []byte
		edit    func(*gcpiit.Config)
		want    error // nil: accepted
		msg     string
	}{
		{name: "wrong audience", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) { c.Audience = "https://example.com" })), want: nodeattest.ErrDenied, msg: "audience"},
		{name: "expired", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) {
			c.IssuedAt, c.Expiry = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		})), want: nodeattest.ErrDenied, msg: "expired"},
		{name: "expired within the leeway", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) {
			c.IssuedAt, c.Expiry = now.Add(-time.Hour-30*time.Second).Unix(), now.Add(-30*time.Second).Unix()
		}))},
		{name: "issued in the future", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) {
			c.IssuedAt, c.Expiry = now.Add(5*time.Minute).Unix(), now.Add(time.Hour).Unix()
		})), want: nodeattest.ErrDenied, msg: "future"},
		{name: "wrong issuer", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) { c.Issuer = "https://accounts.example.com" })), want: nodeattest.ErrDenied, msg: "issuer"},
		{name: "issuer without scheme", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) { c.Issuer = "accounts.google.com" }))},
		{name: "project not allowed", payload: token(t, f.signer, anotherProject), want: nodeattest.ErrDenied, msg: "projectid_allow_list"},
		{name: "project allowed after all", payload: token(t, f.signer, anotherProject), edit: func(c *gcpiit.Config) {
			c.ProjectIDAllowList = append(c.ProjectIDAllowList, "attacker-project")
		}},
		{name: "unknown kid", payload: token(t, other, inst), want: nodeattest.ErrDenied, msg: "not one of Google's signing keys"},
		{name: "bad signature", payload: token(t, forged, inst), want: nodeattest.ErrDenied, msg: "signature"},
		{name: "claims swapped under a signature", payload: []byte(segments[0] + "." + strings.Split(string(token(t, f.signer, anotherProject)), ".")[1] + "." + segments[2]), edit: func(c *gcpiit.Config) {
			c.ProjectIDAllowList = append(c.ProjectIDAllowList, "attacker-project")
		}, want: nodeattest.ErrDenied, msg: "signature"},
		{name: "alg none", payload: []byte(b64(`{"alg":"none","kid":"`+keyID+`"}`) + "." + segments[1] + "."), want: nodeattest.ErrInvalid},
		{name: "alg HS256", payload: must2(f.signer.SignWithHeader(map[string]string{"alg": "HS256", "kid": keyID}, claims(func(*gcpiittest.Claims) {}))), want: nodeattest.ErrInvalid, msg: "alg"},
		{name: "critical header", payload: must2(f.signer.SignWithHeader(map[string]any{"alg": "RS256", "kid": keyID, "crit": []string{"exp"}}, claims(func(*gcpiittest.Claims) {}))), want: nodeattest.ErrInvalid},
		{name: "no kid", payload: must2(f.signer.SignWithHeader(map[string]string{"alg": "RS256"}, claims(func(*gcpiittest.Claims) {}))), want: nodeattest.ErrInvalid},
		{name: "standard format", payload: signed(t, f.signer, inst.Claims(nil, gcpiit.Audience, false, false, now)), want: nodeattest.ErrInvalid, msg: "format=full"},
		{name: "no exp", payload: signed(t, f.signer, map[string]any{"iss": "https://accounts.google.com", "aud": gcpiit.Audience, "iat": now.Unix(), "google": claims(func(*gcpiittest.Claims) {}).Google}), want: nodeattest.ErrInvalid, msg: "exp"},
		{name: "audience array", payload: signed(t, f.signer, map[string]any{"iss": "https://accounts.google.com", "aud": []string{"x", gcpiit.Audience}, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "google": claims(func(*gcpiittest.Claims) {}).Google})},
		{name: "instance name with a slash", payload: signed(t, f.signer, claims(func(c *gcpiittest.Claims) { c.Google.ComputeEngine.InstanceName = "web/../admin" })), want: nodeattest.ErrInvalid, msg: "instance_name"},
		{name: "not a JWS", payload: []byte("not a token"), want: nodeattest.ErrInvalid},
		{name: "JSON serialization", payload: []byte(`{"payload":"` + segments[1] + `","protected":"` + segments[0] + `","signature":"` + segments[2] + `"}`), want: nodeattest.ErrInvalid},
		{name: "trailing newline", payload: append(append([]byte(nil), good...), '\n'), want: nodeattest.ErrInvalid},
		{name: "padded segment", payload: []byte(segments[0] + "." + segments[1] + "=." + segments[2]), want: nodeattest.ErrInvalid},
		{name: "empty", payload: nil, want: nodeattest.ErrInvalid},
		{name: "oversized", payload: []byte(strings.Repeat("a", 20<<10) + ".b.c"), want: nodeattest.ErrInvalid},
		{name: "metadata value over the limit", payload: good, edit: func(c *gcpiit.Config) {
			c.UseInstanceMetadata, c.AllowedMetadataKeys, c.MaxMetadataValueSize = true, []string{"ssh-keys"}, 8
		}, want: nodeattest.ErrDenied, msg: "max_metadata_value_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := f.attestor(t, tc.edit).Attest(testContext(t), tc.payload, noChallenge)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Attest() = %v, want success", err)
			case tc.want == nil:
				return
			case err == nil:
				t.Fatalf("Attest() = %s, want %v", res.AgentID, tc.want)
			case !errors.Is(err, tc.want):
				t.Fatalf("Attest() = %v, want %v", err, tc.want)
			case errors.Is(err, nodeattest.ErrInvalid) && errors.Is(err, nodeattest.ErrDenied):
				t.Fatalf("Attest() = %v, both ErrInvalid and ErrDenied", err)
			case !strings.Contains(err.Error(), tc.msg):
				t.Errorf("Attest() = %v, want a message with %q", err, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "gcpiit: ") {
				t.Errorf("Attest() error %q lacks the gcpiit: prefix", err)
			}
		})
	}
}

// TestAttestInstanceLookup: with use_instance_metadata the instance must
// exist and be the token's instance, not another created under its name.
func TestAttestInstanceLookup(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, func(c *gcpiit.Config) { c.UseInstanceMetadata = true })
	ctx := testContext(t)
	tok := token(t, f.signer, testInstance())

	f.google.DeleteInstance(project, zone, "web-1")
	if res, err := a.Attest(ctx, tok, noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Attest(deleted instance) = %v, %v; want ErrDenied, does not exist", res, err)
	}
	recreated := testInstance()
	recreated.ID++
	f.google.PutInstance(recreated)
	if res, err := a.Attest(ctx, tok, noChallenge); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), "not the token's") {
		t.Errorf("Attest(instance recreated under the name) = %v, %v; want ErrDenied", res, err)
	}
	f.google.PutInstance(testInstance())
	if _, err := a.Attest(ctx, tok, noChallenge); err != nil {
		t.Errorf("Attest(instance back) = %v", err)
	}
}

// TestAttestComputeUnavailable: a Compute API that cannot be reached is an
// internal error, neither ErrInvalid nor ErrDenied.
func TestAttestComputeUnavailable(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, func(c *gcpiit.Config) {
		c.UseInstanceMetadata = true
		c.ComputeEndpoint = "https://127.0.0.1:1/compute/v1/"
	})
	_, err := a.Attest(testContext(t), token(t, f.signer, testInstance()), noChallenge)
	if err == nil || errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("Attest() = %v, want an internal error", err)
	}
}

// TestNewRefuses: configurations New must refuse.
func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  gcpiit.Config
	}{
		{"no project allow list", gcpiit.Config{}},
		{"malformed project", gcpiit.Config{ProjectIDAllowList: []string{"Not A Project"}}},
		{"bad template", gcpiit.Config{ProjectIDAllowList: []string{project}, AgentPathTemplate: "/{{ .ProjectID"}},
		{"unknown template function", gcpiit.Config{ProjectIDAllowList: []string{project}, AgentPathTemplate: "/{{ env \"HOME\" }}"}},
		{"negative metadata size", gcpiit.Config{ProjectIDAllowList: []string{project}, MaxMetadataValueSize: -1}},
		{"relative keys URL", gcpiit.Config{ProjectIDAllowList: []string{project}, KeysURL: "/certs"}},
		{"compute endpoint not http", gcpiit.Config{ProjectIDAllowList: []string{project}, ComputeEndpoint: "file:///etc/passwd"}},
		{"negative timeout", gcpiit.Config{ProjectIDAllowList: []string{project}, Timeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := gcpiit.New(tc.cfg, td); err == nil {
				t.Errorf("New(%+v) succeeded, want an error", tc.cfg)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func must2(s string, err error) []byte {
	if err != nil {
		panic(err)
	}
	return []byte(s)
}
