package x509pop_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/selector"
)

// spireVectors is testdata/spire_v1.13.3_vectors.json, written by running
// SPIRE v1.13.3's own x509pop package (testdata/spirevectors): the payload a
// spire-agent sends, a challenge with a fixed nonce as SPIRE's server encodes
// it, SPIRE's agent's response to it, and the agent IDs SPIRE's path
// templates render. The formats themselves are documented in wire.go.
type spireVectors struct {
	TrustDomain string    `json:"trust_domain"`
	Now         time.Time `json:"now"`
	RootPEM     string    `json:"root_pem"`
	Cases       []struct {
		Name      string            `json:"name"`
		Payload   json.RawMessage   `json:"payload"`
		Challenge json.RawMessage   `json:"challenge"`
		Response  json.RawMessage   `json:"response"`
		AgentIDs  map[string]string `json:"agent_ids"`
		KeyPEM    string            `json:"key_pem"`
	} `json:"cases"`
}

func loadSPIREVectors(t *testing.T) *spireVectors {
	t.Helper()
	data, err := os.ReadFile("testdata/spire_v1.13.3_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v spireVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 {
		t.Fatal("no SPIRE vectors")
	}
	return &v
}

// compact returns the JSON as encoding/json writes it (the vectors file is
// indented).
func compact(t *testing.T, raw json.RawMessage) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func pemBlock(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM block in %q", s)
	}
	return b.Bytes
}

// TestSPIREWireFormat checks arbor against SPIRE's own x509pop messages: the
// server half must accept a real spire-agent's payload and response and
// issue a byte-identical challenge, the agent half must produce SPIRE's
// payload bytes and a response of the same shape, and agent ID templates
// must render as SPIRE renders them.
func TestSPIREWireFormat(t *testing.T) {
	v := loadSPIREVectors(t)
	td := spiffeid.RequireTrustDomainFromString(v.TrustDomain)
	root := must(x509.ParseCertificate(pemBlock(t, v.RootPEM)))
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			ctx := testContext(t)
			var payload struct{ Certificates [][]byte }
			if err := json.Unmarshal(c.Payload, &payload); err != nil {
				t.Fatal(err)
			}
			var certs []*x509.Certificate
			for _, der := range payload.Certificates {
				certs = append(certs, must(x509.ParseCertificate(der)))
			}

			// Agent half: the payload is byte for byte SPIRE's.
			if got, want := must(x509pop.AttestationPayload(certs)), compact(t, c.Payload); !bytes.Equal(got, want) {
				t.Errorf("AttestationPayload() = %s, want SPIRE's %s", got, want)
			}

			// Server half: replay SPIRE's exchange. The attestor draws the
			// same nonce SPIRE's challenge carries, so SPIRE's response
			// answers it.
			var challenge map[string]*struct{ Nonce []byte }
			if err := json.Unmarshal(c.Challenge, &challenge); err != nil {
				t.Fatal(err)
			}
			var nonce []byte
			for _, m := range challenge {
				if m != nil {
					nonce = m.Nonce
				}
			}
			for template, wantID := range c.AgentIDs {
				a := must(x509pop.New(x509pop.Config{
					TrustDomain:       td,
					TrustRoots:        []*x509.Certificate{root},
					AgentPathTemplate: template,
					Now:               func() time.Time { return v.Now },
					Rand:              bytes.NewReader(nonce),
				}))
				res, err := a.Attest(ctx, c.Payload, func(_ context.Context, got []byte) ([]byte, error) {
					if want := compact(t, c.Challenge); !bytes.Equal(got, want) {
						t.Errorf("challenge = %s, want SPIRE's %s", got, want)
					}
					return c.Response, nil
				})
				if err != nil {
					t.Fatalf("Attest(SPIRE payload and response, template %q) = %v", template, err)
				}
				if got := res.AgentID.String(); got != wantID {
					t.Errorf("template %q: agent ID = %q, want SPIRE's %q", template, got, wantID)
				}
				if template != "" {
					continue
				}
				leaf := certs[0]
				want := selector.Sorted([]selector.Selector{
					{Type: "x509pop", Value: "subject:cn:" + leaf.Subject.CommonName},
					{Type: "x509pop", Value: "ca:fingerprint:" + fingerprint(certs[1])},
					{Type: "x509pop", Value: "ca:fingerprint:" + fingerprint(root)},
					{Type: "x509pop", Value: "serialnumber:0" + leaf.SerialNumber.Text(16)},
					{Type: "x509pop", Value: "san:datacenter:us-east-1"},
					{Type: "x509pop", Value: "san:rack:r1/slot2"},
				})
				if diff := cmp.Diff(want, res.Selectors); diff != "" {
					t.Errorf("selectors mismatch (-want +got):\n%s", diff)
				}
			}

			// Agent half: the response to SPIRE's challenge has SPIRE's shape
			// (same members, same fields, same nulls) and verifies.
			signer, ok := must(x509.ParsePKCS8PrivateKey(pemBlock(t, c.KeyPEM))).(crypto.Signer)
			if !ok {
				t.Fatal("vector key is not a crypto.Signer")
			}
			resp := must(x509pop.ChallengeResponse(signer, compact(t, c.Challenge), nil))
			if diff := cmp.Diff(shape(t, c.Response), shape(t, resp)); diff != "" {
				t.Errorf("ChallengeResponse() shape differs from SPIRE's (-spire +arbor):\n%s", diff)
			}
			a := must(x509pop.New(x509pop.Config{
				TrustDomain: td,
				TrustRoots:  []*x509.Certificate{root},
				Now:         func() time.Time { return v.Now },
				Rand:        bytes.NewReader(nonce),
			}))
			if _, err := a.Attest(ctx, c.Payload, func(context.Context, []byte) ([]byte, error) { return resp, nil }); err != nil {
				t.Errorf("Attest(arbor response to SPIRE's challenge) = %v", err)
			}
		})
	}
}

// shape reduces a JSON document to its structure: object keys, nulls, and
// "value" for anything else.
func shape(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			out := map[string]any{}
			for k, e := range v {
				out[k] = walk(e)
			}
			return out
		case nil:
			return nil
		default:
			return "value"
		}
	}
	return walk(v)
}
