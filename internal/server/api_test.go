package server_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
)

// snapshot is everything an admin can read; bad input must not change it.
type snapshot struct {
	Entries []*types.Entry
	Agents  []*types.Agent
	Bundle  *types.Bundle
	Feds    []*types.Bundle
}

func (h *harness) snapshot() snapshot {
	h.t.Helper()
	ctx := ctxT(h.t)
	es := must(entryv1.NewEntryClient(h.admin).ListEntries(ctx, &entryv1.ListEntriesRequest{}))(h.t)
	as := must(agentv1.NewAgentClient(h.admin).ListAgents(ctx, &agentv1.ListAgentsRequest{}))(h.t)
	b := must(bundlev1.NewBundleClient(h.admin).GetBundle(ctx, &bundlev1.GetBundleRequest{}))(h.t)
	fs := must(bundlev1.NewBundleClient(h.admin).ListFederatedBundles(ctx, &bundlev1.ListFederatedBundlesRequest{}))(h.t)
	return snapshot{es.Entries, as.Agents, b, fs.Bundles}
}

func TestBadInputChangesNothing(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	entryID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/web"), Selectors: []*types.Selector{sel("unix", "uid:1000")}})
	expiredToken := h.token(1)
	usedToken := h.token(600)
	if _, err := h.attest(usedToken); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(5 * time.Second) // expiredToken is now past its TTL
	bannedAgent := h.newAgent()
	must(agentv1.NewAgentClient(h.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(bannedAgent.ID.Path())}))(t)

	entries := entryv1.NewEntryClient(h.admin)
	agents := agentv1.NewAgentClient(h.admin)
	bundles := bundlev1.NewBundleClient(h.admin)
	svids := svidv1.NewSVIDClient(h.admin)
	agentSVIDs := svidv1.NewSVIDClient(h.dial(agent))

	good := func() *types.Entry {
		return &types.Entry{ParentId: protoID("/node"), SpiffeId: protoID("/new"), Selectors: []*types.Selector{sel("unix", "uid:1")}}
	}
	withEntry := func(f func(e *types.Entry)) *types.Entry { e := good(); f(e); return e }
	createStatus := func(e *types.Entry) error {
		resp, err := entries.BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
		if err != nil {
			return err
		}
		st := resp.Results[0].Status
		return status.Error(codes.Code(st.Code), st.Message)
	}

	before := h.snapshot()
	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"entry: malformed SPIFFE ID path", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.SpiffeId.Path = "no-slash" }))
		}, codes.InvalidArgument},
		{"entry: bad trust domain", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.SpiffeId.TrustDomain = "Bad TD!" }))
		}, codes.InvalidArgument},
		{"entry: foreign trust domain", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.SpiffeId.TrustDomain = "other.org" }))
		}, codes.InvalidArgument},
		{"entry: missing parent", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.ParentId = nil }))
		}, codes.InvalidArgument},
		{"entry: no selectors", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.Selectors = nil }))
		}, codes.InvalidArgument},
		{"entry: selector without value", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.Selectors = []*types.Selector{sel("unix", "")} }))
		}, codes.InvalidArgument},
		{"entry: selector type with colon", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.Selectors = []*types.Selector{sel("a:b", "c")} }))
		}, codes.InvalidArgument},
		{"entry: negative x509 TTL", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.X509SvidTtl = -1 }))
		}, codes.InvalidArgument},
		{"entry: negative JWT TTL", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.JwtSvidTtl = -5 }))
		}, codes.InvalidArgument},
		{"entry: bad DNS name", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.DnsNames = []string{"bad name"} }))
		}, codes.InvalidArgument},
		{"entry: reserved agent ID", func() error {
			return createStatus(withEntry(func(e *types.Entry) { e.SpiffeId.Path = "/spire/agent/x" }))
		}, codes.InvalidArgument},
		{"entry: duplicate", func() error {
			return createStatus(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/web"), Selectors: []*types.Selector{sel("unix", "uid:1000")}})
		}, codes.AlreadyExists},
		{"entry: get unknown ID", func() error {
			_, err := entries.GetEntry(ctxT(t), &entryv1.GetEntryRequest{Id: "no-such-entry"})
			return err
		}, codes.NotFound},
		{"entry: update unknown ID", func() error {
			resp, err := entries.BatchUpdateEntry(ctxT(t), &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{withEntry(func(e *types.Entry) { e.Id = "nope" })}})
			if err != nil {
				return err
			}
			return status.Error(codes.Code(resp.Results[0].Status.Code), resp.Results[0].Status.Message)
		}, codes.NotFound},
		{"entry: update to malformed selector", func() error {
			resp, err := entries.BatchUpdateEntry(ctxT(t), &entryv1.BatchUpdateEntryRequest{
				Entries:   []*types.Entry{{Id: entryID, Selectors: []*types.Selector{sel("", "x")}}},
				InputMask: &types.EntryMask{Selectors: true},
			})
			if err != nil {
				return err
			}
			return status.Error(codes.Code(resp.Results[0].Status.Code), resp.Results[0].Status.Message)
		}, codes.InvalidArgument},
		{"entry: delete unknown ID", func() error {
			resp, err := entries.BatchDeleteEntry(ctxT(t), &entryv1.BatchDeleteEntryRequest{Ids: []string{"nope"}})
			if err != nil {
				return err
			}
			return status.Error(codes.Code(resp.Results[0].Status.Code), resp.Results[0].Status.Message)
		}, codes.NotFound},
		{"entry: list with negative page size", func() error {
			_, err := entries.ListEntries(ctxT(t), &entryv1.ListEntriesRequest{PageSize: -1})
			return err
		}, codes.InvalidArgument},
		{"token: zero TTL", func() error {
			_, err := agents.CreateJoinToken(ctxT(t), &agentv1.CreateJoinTokenRequest{Ttl: 0})
			return err
		}, codes.InvalidArgument},
		{"token: alias in foreign trust domain", func() error {
			_, err := agents.CreateJoinToken(ctxT(t), &agentv1.CreateJoinTokenRequest{Ttl: 60, AgentId: &types.SPIFFEID{TrustDomain: "other.org", Path: "/x"}})
			return err
		}, codes.InvalidArgument},
		{"attest: reused join token", func() error {
			_, err := h.attest(usedToken)
			return err
		}, codes.PermissionDenied},
		{"attest: expired join token", func() error {
			_, err := h.attest(expiredToken)
			return err
		}, codes.PermissionDenied},
		{"attest: unknown join token", func() error {
			_, err := h.attest("never-issued")
			return err
		}, codes.PermissionDenied},
		{"attest: unknown attestor", func() error {
			stream := must(agentv1.NewAgentClient(h.dial(nil)).AttestAgent(ctxT(t)))(t)
			stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
				Data: &types.AttestationData{Type: "aws_iid", Payload: []byte("{}")}, Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, newKey(t))}}}})
			_, err := stream.Recv()
			return err
		}, codes.InvalidArgument},
		{"agent: banned agent syncs", func() error {
			_, err := entryv1.NewEntryClient(h.dial(bannedAgent)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
			return err
		}, codes.PermissionDenied},
		{"agent: get malformed ID", func() error {
			_, err := agents.GetAgent(ctxT(t), &agentv1.GetAgentRequest{Id: protoID("not-absolute")})
			return err
		}, codes.InvalidArgument},
		{"agent: ban unknown", func() error {
			_, err := agents.BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID("/spire/agent/join_token/none")})
			return err
		}, codes.NotFound},
		{"agent: evict non-agent ID", func() error {
			_, err := agents.DeleteAgent(ctxT(t), &agentv1.DeleteAgentRequest{Id: protoID("/web")})
			return err
		}, codes.InvalidArgument},
		{"svid: malformed CSR", func() error {
			resp, err := agentSVIDs.BatchNewX509SVID(ctxT(t), &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{{EntryId: entryID, Csr: []byte("garbage")}}})
			if err != nil {
				return err
			}
			return status.Error(codes.Code(resp.Results[0].Status.Code), resp.Results[0].Status.Message)
		}, codes.InvalidArgument},
		{"svid: entry not authorized", func() error {
			resp, err := agentSVIDs.BatchNewX509SVID(ctxT(t), &svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{{EntryId: "someone-elses", Csr: csrFor(t, newKey(t))}}})
			if err != nil {
				return err
			}
			return status.Error(codes.Code(resp.Results[0].Status.Code), resp.Results[0].Status.Message)
		}, codes.NotFound},
		{"svid: JWT without audience", func() error {
			_, err := agentSVIDs.NewJWTSVID(ctxT(t), &svidv1.NewJWTSVIDRequest{EntryId: entryID})
			return err
		}, codes.InvalidArgument},
		{"svid: mint with two URI SANs", func() error {
			u1, u2 := spiffeID("/a").URL(), spiffeID("/b").URL()
			_, err := svids.MintX509SVID(ctxT(t), &svidv1.MintX509SVIDRequest{Csr: csrFor(t, newKey(t), u1, u2)})
			return err
		}, codes.InvalidArgument},
		{"svid: mint foreign SPIFFE ID", func() error {
			_, err := svids.MintX509SVID(ctxT(t), &svidv1.MintX509SVIDRequest{Csr: csrFor(t, newKey(t), &url.URL{Scheme: "spiffe", Host: "other.org", Path: "/x"})})
			return err
		}, codes.InvalidArgument},
		{"svid: mint JWT with negative TTL", func() error {
			_, err := svids.MintJWTSVID(ctxT(t), &svidv1.MintJWTSVIDRequest{Id: protoID("/a"), Audience: []string{"x"}, Ttl: -1})
			return err
		}, codes.InvalidArgument},
		{"bundle: append non-CA certificate", func() error {
			_, err := bundles.AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{X509Authorities: []*types.X509Certificate{{Asn1: agent.Certificates[0].Raw}}})
			return err
		}, codes.InvalidArgument},
		{"bundle: append garbage JWT key", func() error {
			_, err := bundles.AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{JwtAuthorities: []*types.JWTKey{{KeyId: "k", PublicKey: []byte("nope")}}})
			return err
		}, codes.InvalidArgument},
		{"bundle: federate with own trust domain", func() error {
			resp, err := bundles.BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{before.Bundle}})
			if err != nil {
				return err
			}
			return status.Error(codes.Code(resp.Results[0].Status.Code), resp.Results[0].Status.Message)
		}, codes.InvalidArgument},
		{"bundle: get unknown federated", func() error {
			_, err := bundles.GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: "unknown.org"})
			return err
		}, codes.NotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if got := status.Code(err); got != c.want {
				t.Errorf("got %v (%v), want %v", got, err, c.want)
			}
			if err != nil && status.Convert(err).Message() == "" {
				t.Errorf("error has no message: %v", err)
			}
		})
	}
	after := h.snapshot()
	if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
		t.Errorf("bad input changed server state (-before +after):\n%s", diff)
	}

	// A failed attestation with a bad CSR must not consume the token.
	tok := h.token(600)
	stream := must(agentv1.NewAgentClient(h.dial(nil)).AttestAgent(ctxT(t)))(t)
	stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data: &types.AttestationData{Type: "join_token", Payload: []byte(tok)}, Params: &agentv1.AgentX509SVIDParams{Csr: []byte("bad")}}}})
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("attest with bad CSR: %v, want InvalidArgument", err)
	}
	if _, err := h.attest(tok); err != nil {
		t.Fatalf("token was consumed by a rejected attestation: %v", err)
	}
}

func TestAgentLifecycle(t *testing.T) {
	h := startServer(t)
	tok := h.token(600)
	agent, err := h.attest(tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := spiffeID(agentPath(tok)); agent.ID != want {
		t.Fatalf("agent ID = %v, want %v", agent.ID, want)
	}
	if _, _, err := x509svid.Verify(agent.Certificates, h.bundle); err != nil {
		t.Fatalf("agent SVID does not verify: %v", err)
	}

	// Renew: both the old and the new SVID work until the new one is used.
	key := newKey(t)
	resp := must(agentv1.NewAgentClient(h.dial(agent)).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)}}))(t)
	renewed := svidFrom(t, resp.Svid, key)
	if renewed.ID != agent.ID || renewed.Certificates[0].SerialNumber.Cmp(agent.Certificates[0].SerialNumber) == 0 {
		t.Fatalf("renewed SVID %v serial %v; want same ID, new serial", renewed.ID, renewed.Certificates[0].SerialNumber)
	}
	sync := func(s *x509svid.SVID) error {
		_, err := entryv1.NewEntryClient(h.dial(s)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		return err
	}
	if err := sync(agent); err != nil {
		t.Fatalf("old SVID before the new one is used: %v", err)
	}
	if err := sync(renewed); err != nil {
		t.Fatalf("renewed SVID: %v", err)
	}
	if err := sync(agent); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("old SVID after the new one was used: %v, want PermissionDenied", err)
	}
	got := must(agentv1.NewAgentClient(h.admin).GetAgent(ctxT(t), &agentv1.GetAgentRequest{Id: protoID(agent.ID.Path())}))(t)
	if got.X509SvidSerialNumber != renewed.Certificates[0].SerialNumber.String() || got.AttestationType != "join_token" || got.Banned {
		t.Fatalf("GetAgent = %v; want serial %v, join_token, not banned", got, renewed.Certificates[0].SerialNumber)
	}

	// Evict: the agent must attest again; a join token agent cannot reuse its token.
	must(agentv1.NewAgentClient(h.admin).DeleteAgent(ctxT(t), &agentv1.DeleteAgentRequest{Id: protoID(agent.ID.Path())}))(t)
	if err := sync(renewed); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("evicted agent sync: %v, want PermissionDenied", err)
	}
	if _, err := h.attest(tok); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("re-attest with used token: %v, want PermissionDenied", err)
	}
	n := must(agentv1.NewAgentClient(h.admin).CountAgents(ctxT(t), &agentv1.CountAgentsRequest{}))(t)
	if n.Count != 0 {
		t.Fatalf("CountAgents after evict = %d, want 0", n.Count)
	}
}

func TestJoinTokenAliasEntry(t *testing.T) {
	h := startServer(t)
	jt := must(agentv1.NewAgentClient(h.admin).CreateJoinToken(ctxT(t), &agentv1.CreateJoinTokenRequest{Ttl: 60, AgentId: protoID("/host/a")}))(t)
	agent := must(h.attest(jt.Value))(t)
	// An entry parented to the alias is authorized for the agent.
	wl := h.createEntry(&types.Entry{ParentId: protoID("/host/a"), SpiffeId: protoID("/wl"), Selectors: []*types.Selector{sel("unix", "uid:7")}})
	resp := must(entryv1.NewEntryClient(h.dial(agent)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{}))(t)
	var ids []string
	for _, e := range resp.Entries {
		ids = append(ids, "spiffe://"+e.SpiffeId.TrustDomain+e.SpiffeId.Path)
	}
	slices.Sort(ids)
	want := []string{"spiffe://example.org/host/a", "spiffe://example.org/wl"}
	if !slices.Equal(ids, want) {
		t.Fatalf("authorized entries = %v, want %v", ids, want)
	}
	if _, err := h.workloadSVID(agent, wl); err != nil {
		t.Fatalf("SVID for entry under the alias: %v", err)
	}
}

func TestSVIDsFollowSpecs(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	id := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/web"), Selectors: []*types.Selector{sel("unix", "uid:1")},
		DnsNames: []string{"web.example.org"}, X509SvidTtl: 600, JwtSvidTtl: 120})
	svid := must(h.workloadSVID(agent, id))(t)
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/web" {
		t.Errorf("URI SANs = %v, want exactly spiffe://example.org/web", leaf.URIs)
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Errorf("leaf IsCA=%v KeyUsage=%v; want non-CA with digitalSignature and no certSign", leaf.IsCA, leaf.KeyUsage)
	}
	if !slices.Equal(leaf.DNSNames, []string{"web.example.org"}) || leaf.Subject.CommonName != "web.example.org" {
		t.Errorf("DNS SANs %v CN %q, want web.example.org", leaf.DNSNames, leaf.Subject.CommonName)
	}
	if ttl := leaf.NotAfter.Sub(time.Now()); ttl > 600*time.Second || ttl < 590*time.Second {
		t.Errorf("X509-SVID lifetime %v, want the entry's 600s", ttl)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, h.bundle); err != nil {
		t.Errorf("X509-SVID does not verify against the bundle: %v", err)
	}
	for _, a := range h.bundle.X509Authorities() {
		if !a.IsCA || a.KeyUsage&x509.KeyUsageCertSign == 0 || len(a.URIs) != 1 || a.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("CA %v: IsCA=%v KeyUsage=%v URIs=%v; want CA with certSign and URI spiffe://example.org", a.Subject, a.IsCA, a.KeyUsage, a.URIs)
		}
	}

	// JWT-SVID.
	resp := must(svidv1.NewSVIDClient(h.dial(agent)).NewJWTSVID(ctxT(t), &svidv1.NewJWTSVIDRequest{EntryId: id, Audience: []string{"db", "cache"}}))(t)
	b := must(bundlev1.NewBundleClient(h.admin).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{}))(t)
	jb := jwtbundle.New(td)
	for _, k := range b.JwtAuthorities {
		jb.AddJWTAuthority(k.KeyId, must(x509.ParsePKIXPublicKey(k.PublicKey))(t))
	}
	tok, err := jwtsvid.ParseAndValidate(resp.Svid.Token, jb, []string{"db"})
	if err != nil {
		t.Fatalf("JWT-SVID does not validate: %v", err)
	}
	if tok.ID.String() != "spiffe://example.org/web" || !slices.Equal(tok.Audience, []string{"db", "cache"}) {
		t.Errorf("JWT-SVID sub %v aud %v", tok.ID, tok.Audience)
	}
	if ttl := tok.Expiry.Sub(time.Now()); ttl > 120*time.Second || ttl < 100*time.Second {
		t.Errorf("JWT-SVID lifetime %v, want the entry's 120s", ttl)
	}
	if _, err := jwtsvid.ParseAndValidate(resp.Svid.Token, jb, []string{"someone-else"}); err == nil {
		t.Error("JWT-SVID validated for an audience it was not issued to")
	}
}

func TestSyncAuthorizedEntriesPaging(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	const n = 2100 // above the server's page size
	var batch []*types.Entry
	for i := range n {
		batch = append(batch, &types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID(fmt.Sprintf("/w/%d", i)), Selectors: []*types.Selector{sel("unix", fmt.Sprintf("uid:%d", i))}})
	}
	for start := 0; start < n; start += 500 {
		resp := must(entryv1.NewEntryClient(h.admin).BatchCreateEntry(ctxT(t), &entryv1.BatchCreateEntryRequest{Entries: batch[start:min(start+500, n)]}))(t)
		for _, r := range resp.Results {
			if r.Status.Code != 0 {
				t.Fatalf("create: %v", r.Status)
			}
		}
	}
	stream := must(entryv1.NewEntryClient(h.dial(agent)).SyncAuthorizedEntries(ctxT(t)))(t)
	must(0, stream.Send(&entryv1.SyncAuthorizedEntriesRequest{}))(t)
	var revs []string
	for {
		resp := must(stream.Recv())(t)
		if len(resp.Entries) > 0 {
			t.Fatal("got full entries while paging revisions")
		}
		for _, r := range resp.EntryRevisions {
			revs = append(revs, r.Id)
		}
		if !resp.More {
			break
		}
	}
	if len(revs) != n {
		t.Fatalf("revisions = %d, want %d", len(revs), n)
	}
	// Ask for 3 of them in full.
	must(0, stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: revs[:3]}))(t)
	resp := must(stream.Recv())(t)
	if len(resp.Entries) != 3 || resp.More {
		t.Fatalf("full entries = %d more=%v, want 3 and no more", len(resp.Entries), resp.More)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}

	// Pagination of ListEntries visits every entry once.
	seen := map[string]bool{}
	token := ""
	for {
		resp := must(entryv1.NewEntryClient(h.admin).ListEntries(ctxT(t), &entryv1.ListEntriesRequest{PageSize: 700, PageToken: token}))(t)
		for _, e := range resp.Entries {
			if seen[e.Id] {
				t.Fatalf("entry %s listed twice", e.Id)
			}
			seen[e.Id] = true
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("paged ListEntries saw %d entries, want %d", len(seen), n)
	}
}

var _ = context.Background
