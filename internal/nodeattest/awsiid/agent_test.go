package awsiid_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

// TestAgentPayload reads the document and both signatures from the IMDSv2
// fake through the SDK (a session token first, then the token on every
// read) and encodes them as SPIRE's agent does; the server half accepts
// the result.
func TestAgentPayload(t *testing.T) {
	f := newFixture(t)
	doc := testDocument().JSON()
	rsa2048 := must(f.signer.Sign(doc))
	sig1024 := must(f.signer.SignRSA1024(doc))
	imds := awsiidtest.NewIMDS(doc, sig1024, rsa2048)
	defer imds.Close()

	ctx := testContext(t)
	got, err := awsiid.AgentPayload(ctx, awsiid.AgentConfig{EC2MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()})
	if err != nil {
		t.Fatalf("AgentPayload() = %v", err)
	}
	var fields map[string]string
	if err := json.Unmarshal(got, &fields); err != nil {
		t.Fatalf("AgentPayload() = %s, not a JSON object of strings: %v", got, err)
	}
	want := map[string]string{"document": string(doc), "signature": sig1024, "rsa2048": rsa2048}
	if len(fields) != len(want) {
		t.Errorf("AgentPayload() fields = %v, want exactly document, signature and rsa2048", fields)
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("AgentPayload() %s = %q, want %q", k, fields[k], v)
		}
	}
	if tokens, refused := imds.Stats(); tokens == 0 || refused != 0 {
		t.Errorf("IMDS saw %d token requests and %d token-less reads, want IMDSv2 only", tokens, refused)
	}
	res, err := f.attestor(t, nil).Attest(ctx, got, noChallenge)
	if err != nil {
		t.Fatalf("Attest(AgentPayload()) = %v", err)
	}
	if want := "spiffe://example.org/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0"; res.AgentID.String() != want {
		t.Errorf("agent ID = %s, want %s", res.AgentID, want)
	}
}

// TestAgentPayloadRefuses: no IMDSv1 fallback, no redirect, no unbounded
// answer.
func TestAgentPayloadRefuses(t *testing.T) {
	ctx := testContext(t)
	var followed bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed = true }))
	defer target.Close()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"IMDSv1 only", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			w.Write([]byte("{}"))
		}},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				w.Write([]byte("token"))
				return
			}
			http.Redirect(w, r, target.URL+"/doc", http.StatusFound)
		}},
		{"oversized document", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				w.Write([]byte("token"))
				return
			}
			w.Write([]byte(strings.Repeat("x", 1<<20)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			if got, err := awsiid.AgentPayload(ctx, awsiid.AgentConfig{EC2MetadataEndpoint: srv.URL}); err == nil {
				t.Fatalf("AgentPayload() = %s, want an error", got)
			}
		})
	}
	if followed {
		t.Error("AgentPayload followed a redirect")
	}
}
