package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// caller is one kind of client in the matrix.
type caller struct {
	name string
	conn grpc.ClientConnInterface
}

func TestAuthorizationMatrix(t *testing.T) {
	h := startServer(t)

	agent := h.newAgent()
	// An agent's child entries: one plain workload, one admin, one downstream.
	wlID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/workload"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
	adminID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/ops/admin"), Selectors: []*types.Selector{sel("unix", "uid:2")}, Admin: true})
	downID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/regional/eu"), Selectors: []*types.Selector{sel("unix", "uid:3")}, Downstream: true})
	workload := must(h.workloadSVID(agent, wlID))(t)
	adminSVID := must(h.workloadSVID(agent, adminID))(t)
	downSVID := must(h.workloadSVID(agent, downID))(t)

	banned := h.newAgent()
	if _, err := agentv1.NewAgentClient(h.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(banned.ID.Path())}); err != nil {
		t.Fatalf("BanAgent: %v", err)
	}

	callers := []caller{
		{"anonymous", h.dial(nil)},
		{"admin-socket", h.admin},
		{"agent", h.dial(agent)},
		{"admin-svid", h.dial(adminSVID)},
		{"downstream", h.dial(downSVID)},
		{"workload", h.dial(workload)},
		{"banned-agent", h.dial(banned)},
		{"foreign-td", h.dialRawCert(foreignSVID(t))},
	}

	jwtKey := func() *types.JWTKey {
		k := newKey(t)
		der := must(x509.MarshalPKIXPublicKey(k.Public()))(t)
		return &types.JWTKey{KeyId: "kid-" + time.Now().Format("150405.000000000"), PublicKey: der, ExpiresAt: time.Now().Add(time.Hour).Unix()}
	}

	rules := []struct {
		rule    string
		call    func(ctx context.Context, c grpc.ClientConnInterface) error
		allowed []string
	}{
		{"admin", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := entryv1.NewEntryClient(c).CountEntries(ctx, &entryv1.CountEntriesRequest{})
			return err
		}, []string{"admin-socket", "admin-svid"}},
		{"admin", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := agentv1.NewAgentClient(c).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 60})
			return err
		}, []string{"admin-socket", "admin-svid"}},
		{"agent", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := entryv1.NewEntryClient(c).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
			return err
		}, []string{"agent"}},
		{"agent", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := svidv1.NewSVIDClient(c).NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: wlID, Audience: []string{"a"}})
			return err
		}, []string{"agent"}},
		{"downstream", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := bundlev1.NewBundleClient(c).PublishJWTAuthority(ctx, &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: jwtKey()})
			return err
		}, []string{"downstream"}},
		{"downstream", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := svidv1.NewSVIDClient(c).NewDownstreamX509CA(ctx, &svidv1.NewDownstreamX509CARequest{Csr: csrFor(t, newKey(t))})
			return err
		}, []string{"downstream"}},
		{"anyone", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := bundlev1.NewBundleClient(c).GetBundle(ctx, &bundlev1.GetBundleRequest{})
			return err
		}, []string{"anonymous", "admin-socket", "agent", "admin-svid", "downstream", "workload", "banned-agent", "foreign-td"}},
		{"admin or agent", func(ctx context.Context, c grpc.ClientConnInterface) error {
			_, err := bundlev1.NewBundleClient(c).GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: "other.org"})
			if status.Code(err) == codes.NotFound {
				return nil // allowed; there is no such bundle
			}
			return err
		}, []string{"admin-socket", "agent", "admin-svid"}},
	}
	for _, r := range rules {
		for _, c := range callers {
			allowed := contains(r.allowed, c.name)
			err := r.call(ctxT(t), c.conn)
			code := status.Code(err)
			switch {
			case allowed && err != nil:
				t.Errorf("rule %s: caller %s denied: %v", r.rule, c.name, err)
			case !allowed && code != codes.PermissionDenied && code != codes.Unauthenticated:
				t.Errorf("rule %s: caller %s got %v (%v), want PermissionDenied or Unauthenticated", r.rule, c.name, code, err)
			}
		}
	}
	// What arbor does not implement (WIT-SVIDs) says so to every caller.
	for _, c := range callers {
		_, err := localauthorityv1.NewLocalAuthorityClient(c.conn).GetWITAuthorityState(ctxT(t), &localauthorityv1.GetWITAuthorityStateRequest{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("GetWITAuthorityState as %s: %v, want Unimplemented", c.name, err)
		}
		_, err = svidv1.NewSVIDClient(c.conn).BatchNewWITSVID(ctxT(t), &svidv1.BatchNewWITSVIDRequest{})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("BatchNewWITSVID as %s: %v, want Unimplemented", c.name, err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// foreignSVID is an X509-SVID of another trust domain, signed by its own CA.
func foreignSVID(t *testing.T) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "evil.org"}},
	}
	caCert := must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey))(t)))(t)
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{{Scheme: "spiffe", Host: "evil.org", Path: "/spire/agent/join_token/x"}},
	}
	leaf := must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, leafTmpl, caCert, key.Public(), caKey))(t)))(t)
	return []*x509.Certificate{leaf, caCert}, key
}

// TestSelfSignedImpostorIsRejected presents a certificate with the right
// trust domain and an agent's ID, but not signed by the server's CA.
func TestSelfSignedImpostorIsRejected(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: agent.Certificates[0].SerialNumber, // even the right serial
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{agent.ID.URL()},
	}
	cert := must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))(t)))(t)
	conn := h.dialRawCert([]*x509.Certificate{cert}, key)
	_, err := entryv1.NewEntryClient(conn).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetAuthorizedEntries with forged agent SVID: %v, want Unauthenticated", err)
	}
}

// TestAgentDenialsCarryReason checks that agent denials carry the
// PermissionDeniedDetails reason spire-agent acts on (re-attest or shut down).
func TestAgentDenialsCarryReason(t *testing.T) {
	h := startServer(t)
	reason := func(err error) types.PermissionDeniedDetails_Reason {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
		for _, d := range st.Details() {
			if pd, ok := d.(*types.PermissionDeniedDetails); ok {
				return pd.Reason
			}
		}
		t.Fatalf("PermissionDenied without PermissionDeniedDetails: %v", err)
		return 0
	}
	sync := func(s *x509svid.SVID) error {
		_, err := entryv1.NewEntryClient(h.dial(s)).GetAuthorizedEntries(ctxT(t), &entryv1.GetAuthorizedEntriesRequest{})
		return err
	}

	evicted := h.newAgent()
	must(agentv1.NewAgentClient(h.admin).DeleteAgent(ctxT(t), &agentv1.DeleteAgentRequest{Id: protoID(evicted.ID.Path())}))(t)
	if r := reason(sync(evicted)); r != types.PermissionDeniedDetails_AGENT_NOT_ATTESTED {
		t.Errorf("evicted agent: reason %v, want AGENT_NOT_ATTESTED", r)
	}

	banned := h.newAgent()
	must(agentv1.NewAgentClient(h.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(banned.ID.Path())}))(t)
	if r := reason(sync(banned)); r != types.PermissionDeniedDetails_AGENT_BANNED {
		t.Errorf("banned agent: reason %v, want AGENT_BANNED", r)
	}

	old := h.newAgent()
	key := newKey(t)
	resp := must(agentv1.NewAgentClient(h.dial(old)).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)}}))(t)
	if err := sync(svidFrom(t, resp.Svid, key)); err != nil {
		t.Fatal(err)
	}
	if r := reason(sync(old)); r != types.PermissionDeniedDetails_AGENT_NOT_ACTIVE {
		t.Errorf("superseded SVID: reason %v, want AGENT_NOT_ACTIVE", r)
	}

	expiring := h.newAgent()
	h.clock.Advance(2 * time.Hour) // past the 1h agent SVID
	if r := reason(sync(expiring)); r != types.PermissionDeniedDetails_AGENT_EXPIRED {
		t.Errorf("expired agent SVID: reason %v, want AGENT_EXPIRED", r)
	}
}
