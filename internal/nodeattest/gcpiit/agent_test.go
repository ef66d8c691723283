package gcpiit_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit/gcpiittest"
)

var _ agent.NodeAttestor = (*gcpiit.AgentAttestor)(nil)

func newMetadata(t testing.TB, s *gcpiittest.Signer, plain bool) *gcpiittest.MetadataServer {
	t.Helper()
	m := gcpiittest.NewMetadataServer(gcpiittest.MetadataConfig{Signer: s, Instance: testInstance(), PlainHTTP: plain, Now: clock})
	t.Cleanup(m.Close)
	return m
}

// TestAgentPayload asks the metadata server fake (TLS) for the default
// service account's token as SPIRE's agent does — audience
// spire-gcp-node-attestor, format=full, Metadata-Flavor: Google — and the
// server half attests the result.
func TestAgentPayload(t *testing.T) {
	f := newFixture(t)
	md := newMetadata(t, f.signer, false)
	ctx := testContext(t)
	got, err := gcpiit.AgentPayload(ctx, gcpiit.AgentConfig{IdentityTokenHost: md.URL(), HTTPClient: md.Client()})
	if err != nil {
		t.Fatalf("AgentPayload() = %v", err)
	}
	if want := token(t, f.signer, testInstance()); string(got) != string(want) {
		t.Errorf("AgentPayload() = %s\nwant the metadata server's token %s", got, want)
	}
	reqs := md.Requests()
	if len(reqs) != 1 {
		t.Fatalf("metadata requests = %+v, want 1", reqs)
	}
	r := reqs[0]
	if r.ServiceAccount != "default" || r.Flavor != "Google" || r.Query.Get("audience") != "spire-gcp-node-attestor" || r.Query.Get("format") != "full" || len(r.Query) != 2 {
		t.Errorf("metadata request = %+v, want SPIRE's (default, Google, audience spire-gcp-node-attestor, format full)", r)
	}
	res, err := f.attestor(t, nil).Attest(ctx, got, noChallenge)
	if err != nil {
		t.Fatalf("Attest(AgentPayload()) = %v", err)
	}
	if want := "spiffe://example.org/spire/agent/gcp_iit/payments-prod/7312554012345678901"; res.AgentID.String() != want {
		t.Errorf("agent ID = %s, want %s", res.AgentID, want)
	}

	a := gcpiit.NewAgentAttestor(gcpiit.AgentConfig{IdentityTokenHost: md.URL(), HTTPClient: md.Client(), ServiceAccount: "metrics@payments-prod.iam.gserviceaccount.com"})
	if a.Type() != "gcp_iit" || a.CanReattest() {
		t.Errorf("AgentAttestor Type() = %q, CanReattest() = %v; want gcp_iit, false", a.Type(), a.CanReattest())
	}
	p, err := a.Payload(ctx)
	if err != nil {
		t.Fatalf("Payload() = %v", err)
	}
	if want := signed(t, f.signer, testInstance().Claims(&testInstance().ServiceAccounts[1], gcpiit.Audience, true, false, now)); string(p) != string(want) {
		t.Errorf("Payload() for the metrics service account = %s, want its token", p)
	}
}

// TestAgentPayloadHost: identity_token_host as SPIRE takes it, a host:port
// reached over plain HTTP.
func TestAgentPayloadHost(t *testing.T) {
	f := newFixture(t)
	md := newMetadata(t, f.signer, true)
	got, err := gcpiit.AgentPayload(testContext(t), gcpiit.AgentConfig{IdentityTokenHost: md.Host()})
	if err != nil {
		t.Fatalf("AgentPayload(host %s) = %v", md.Host(), err)
	}
	if want := token(t, f.signer, testInstance()); string(got) != string(want) {
		t.Errorf("AgentPayload() = %s, want %s", got, want)
	}
}

// TestAgentPayloadRefuses: no redirect followed, no unbounded or empty
// answer, no error status taken for a token, no malformed host or service
// account.
func TestAgentPayloadRefuses(t *testing.T) {
	ctx := testContext(t)
	var followed atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed.Store(true); w.Write([]byte("a.b.c")) }))
	defer target.Close()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/token", http.StatusFound)
		}},
		{"oversized token", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(strings.Repeat("x", 1<<20))) }},
		{"empty token", func(w http.ResponseWriter, r *http.Request) {}},
		{"not found", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "service account not found", http.StatusNotFound)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			if got, err := gcpiit.AgentPayload(ctx, gcpiit.AgentConfig{IdentityTokenHost: srv.URL}); err == nil {
				t.Fatalf("AgentPayload() = %.40q, want an error", got)
			}
		})
	}
	if followed.Load() {
		t.Error("AgentPayload followed a redirect")
	}
	f := newFixture(t)
	md := newMetadata(t, f.signer, true)
	for _, cfg := range []gcpiit.AgentConfig{
		{IdentityTokenHost: md.Host(), ServiceAccount: "nobody@example.iam.gserviceaccount.com"},
		{IdentityTokenHost: md.Host(), ServiceAccount: "../../token"},
		{IdentityTokenHost: md.Host(), ServiceAccount: "default?x=1"},
		{IdentityTokenHost: md.Host() + "/path"},
		{IdentityTokenHost: "user@" + md.Host()},
		{IdentityTokenHost: "ftp://" + md.Host()},
		{IdentityTokenHost: "http://" + md.Host() + "/computeMetadata"},
	} {
		if got, err := gcpiit.AgentPayload(ctx, cfg); err == nil {
			t.Errorf("AgentPayload(%+v) = %.40q, want an error", cfg, got)
		}
	}
}
