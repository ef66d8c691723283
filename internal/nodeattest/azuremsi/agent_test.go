package azuremsi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
)

var _ agent.NodeAttestor = (*azuremsi.AgentAttestor)(nil)

// newIMDS is the metadata service of testVM, issuing tokens signed with
// the fixture's key at the fixture's time.
func (f *fixture) newIMDS(t testing.TB) *azuremsitest.IMDS {
	c := testClaims()
	m := azuremsitest.NewIMDS(f.key, azuremsitest.Claims{Tenant: c.Tenant, Principal: c.Principal, MIResourceID: c.MIResourceID}, f.clock.Now)
	t.Cleanup(m.Close)
	return m
}

// TestAgentPayload asks the metadata service for a token the way SPIRE's
// agent does (the same query, the Metadata header) and sends SPIRE's
// {"token": ...}; the server half attests it.
func TestAgentPayload(t *testing.T) {
	f := newFixture(t)
	imds := f.newIMDS(t)
	ctx := testContext(t)
	got, err := azuremsi.AgentPayload(ctx, azuremsi.AgentConfig{MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()})
	if err != nil {
		t.Fatalf("AgentPayload() = %v", err)
	}
	var fields map[string]string
	if err := json.Unmarshal(got, &fields); err != nil || len(fields) != 1 || strings.Count(fields["token"], ".") != 2 {
		t.Fatalf("AgentPayload() = %s, want {\"token\": <JWT>} (%v)", got, err)
	}
	reqs := imds.Requests()
	if len(reqs) != 1 {
		t.Fatalf("metadata service saw %d token requests, want 1", len(reqs))
	}
	if want := "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"; reqs[0].RawQuery != want {
		t.Errorf("token request query = %q, want SPIRE's %q", reqs[0].RawQuery, want)
	}
	res, err := f.attestor(t, nil).Attest(ctx, got, noChallenge)
	if err != nil {
		t.Fatalf("Attest(AgentPayload()) = %v", err)
	}
	if want := "spiffe://example.org/spire/agent/azure_msi/" + tenantID + "/" + principalID; res.AgentID.String() != want {
		t.Errorf("agent ID = %s, want %s", res.AgentID, want)
	}

	// A custom resource: the token is for it, and a server expecting the
	// default refuses it.
	a := azuremsi.NewAgentAttestor(azuremsi.AgentConfig{ResourceID: "api://arbor-attestation", MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()})
	if a.Type() != "azure_msi" || a.CanReattest() {
		t.Errorf("AgentAttestor: Type %q, CanReattest %v; want azure_msi, false", a.Type(), a.CanReattest())
	}
	custom, err := a.Payload(ctx)
	if err != nil {
		t.Fatalf("Payload() = %v", err)
	}
	if q := imds.Requests()[1].Query().Get("resource"); q != "api://arbor-attestation" {
		t.Errorf("token requested for %q, want the configured resource", q)
	}
	if _, err := f.attestor(t, nil).Attest(ctx, custom, noChallenge); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Errorf("Attest(token for another resource) = %v, want an audience refusal", err)
	}
	withResource := f.attestor(t, func(c *azuremsi.Config) {
		c.Tenants[tenantID] = azuremsi.TenantConfig{ResourceID: "api://arbor-attestation", SubscriptionIDs: []string{subscription}, Credential: azuremsitest.StaticCredential{Token: armToken}}
	})
	if _, err := withResource.Attest(ctx, custom, noChallenge); err != nil {
		t.Errorf("Attest(token for the configured resource) = %v", err)
	}
}

// TestAgentPayloadRefuses: a failing or misbehaving metadata service is an
// error, no redirect is followed and no unbounded answer read.
func TestAgentPayloadRefuses(t *testing.T) {
	ctx := testContext(t)
	var followed bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed = true
		w.Write([]byte(`{"access_token":"x.y.z"}`))
	}))
	defer target.Close()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		msg     string
	}{
		{"no identity", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_request","error_description":"Identity not found"}`))
		}, "Identity not found"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target.URL, http.StatusFound) }, "redirect"},
		{"oversized answer", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(strings.Repeat("x", 1<<20))) }, "size limit"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, "decoding"},
		{"no access_token", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"token_type":"Bearer"}`)) }, "no access_token"},
		{"header missing", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Metadata") == "true" {
				w.Write([]byte(`{"access_token":"x.y.z"}`))
				return
			}
			http.Error(w, "no header", http.StatusBadRequest)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			got, err := azuremsi.AgentPayload(ctx, azuremsi.AgentConfig{MetadataEndpoint: srv.URL})
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("AgentPayload() = %v; the Metadata header was not sent", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("AgentPayload() = %s, %v; want an error about %q", got, err, tc.msg)
			}
		})
	}
	if followed {
		t.Error("AgentPayload followed a redirect")
	}
	if _, err := azuremsi.AgentPayload(ctx, azuremsi.AgentConfig{MetadataEndpoint: "169.254.169.254"}); err == nil {
		t.Error("AgentPayload() with an endpoint that is not a URL succeeded")
	}
}
