package nested

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

func csr(t *testing.T, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "csr"}}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// dialAs opens an mTLS connection to tr's API presenting svid, authenticating
// the server as spiffe://example.org/spire/server against tr's bundle.
func dialAs(t *testing.T, tr *tier, svid x509svid.Source) *grpc.ClientConn {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(td, tr.roots())
	tc := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(idOf("/spire/server")))
	conn, err := grpc.NewClient(tr.addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// attestRaw attests an agent with a join token over agent.v1 and returns
// the agent SVID the server issued.
func attestRaw(t *testing.T, tr *tier) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	bundle := x509bundle.FromX509Authorities(td, tr.roots())
	tc := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(idOf("/spire/server")))
	conn, err := grpc.NewClient(tr.addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(tr.joinToken(idOf("/not/a/tier")))},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr(t, key)},
	}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	stream.CloseSend()
	var chain []*x509.Certificate
	for _, der := range resp.GetResult().GetSvid().GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		t.Fatalf("AttestAgent returned no SVID: %v", resp)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func jwtKey(t *testing.T) *types.JWTKey {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	return &types.JWTKey{PublicKey: der, KeyId: fmt.Sprintf("test-%d", time.Now().UnixNano()), ExpiresAt: time.Now().Add(time.Hour).Unix()}
}

// TestDownstreamAPIAuthorization: only the SVID of a downstream entry may
// call NewDownstreamX509CA and PublishJWTAuthority, and even it may not ask
// for a CA of another trust domain or one that outlives the parent's own CA.
func TestDownstreamAPIAuthorization(t *testing.T) {
	const rootCATTL = 120 * time.Second
	root := startRoot(t, "root", ttls{ca: rootCATTL, x509: 20 * time.Second, agent: 60 * time.Second})
	reg := startChild(t, root, "regional", ttls{ca: 60 * time.Second, x509: 12 * time.Second})

	// A plain workload SVID of the root, served by a real agent.
	plain := startWorkload(t, root, "plain")
	plainSVID, err := plain.client.FetchX509SVID(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// An agent SVID of the root (its join token even carries an alias).
	agentSVID := attestRaw(t, root)
	// The regional's downstream SVID, from its co-located agent.
	src, err := workloadapi.NewX509Source(callCtx(t), workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+reg.colo.sock)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	goodCSR := csr(t, newKey(t), "spiffe://example.org")
	for _, tc := range []struct {
		name string
		as   x509svid.Source
	}{
		{"plain workload SVID", fixedSVID{plainSVID}},
		{"agent SVID", fixedSVID{agentSVID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialAs(t, root, tc.as)
			_, err := svidv1.NewSVIDClient(conn).NewDownstreamX509CA(callCtx(t), &svidv1.NewDownstreamX509CARequest{Csr: goodCSR, PreferredTtl: 30})
			if got := status.Code(err); got != codes.PermissionDenied {
				t.Errorf("NewDownstreamX509CA as %s: code %v (%v), want PermissionDenied", tc.name, got, err)
			}
			_, err = bundlev1.NewBundleClient(conn).PublishJWTAuthority(callCtx(t), &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: jwtKey(t)})
			if got := status.Code(err); got != codes.PermissionDenied {
				t.Errorf("PublishJWTAuthority as %s: code %v (%v), want PermissionDenied", tc.name, got, err)
			}
		})
	}

	conn := dialAs(t, root, src)
	svidClient := svidv1.NewSVIDClient(conn)
	for _, tc := range []struct {
		name string
		req  *svidv1.NewDownstreamX509CARequest
		want codes.Code
	}{
		{"valid", &svidv1.NewDownstreamX509CARequest{Csr: goodCSR, PreferredTtl: 30}, codes.OK},
		{"no preferred_ttl (the parent's default)", &svidv1.NewDownstreamX509CARequest{Csr: goodCSR}, codes.OK},
		{"URI SAN of another trust domain", &svidv1.NewDownstreamX509CARequest{Csr: csr(t, newKey(t), "spiffe://evil.example"), PreferredTtl: 30}, codes.InvalidArgument},
		{"URI SAN of another trust domain's workload", &svidv1.NewDownstreamX509CARequest{Csr: csr(t, newKey(t), "spiffe://evil.example/workload"), PreferredTtl: 30}, codes.InvalidArgument},
		{"preferred_ttl longer than the parent's CA TTL", &svidv1.NewDownstreamX509CARequest{Csr: goodCSR, PreferredTtl: int32((rootCATTL + time.Hour) / time.Second)}, codes.InvalidArgument},
		{"preferred_ttl one second longer than the parent's CA TTL", &svidv1.NewDownstreamX509CARequest{Csr: goodCSR, PreferredTtl: int32((rootCATTL + time.Second) / time.Second)}, codes.InvalidArgument},
	} {
		t.Run("downstream SVID/"+tc.name, func(t *testing.T) {
			resp, err := svidClient.NewDownstreamX509CA(callCtx(t), tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("NewDownstreamX509CA: code %v (%v), want %v", got, err, tc.want)
			}
			if err != nil {
				return
			}
			ca, err := x509.ParseCertificate(resp.CaCertChain[0])
			if err != nil {
				t.Fatal(err)
			}
			rootCA, _ := root.srv.CA().X509CA()
			if ca.NotAfter.After(rootCA.NotAfter) {
				t.Errorf("downstream CA not after %v outlives the parent CA (%v)", ca.NotAfter, rootCA.NotAfter)
			}
			if len(ca.URIs) != 1 || ca.URIs[0].String() != "spiffe://example.org" {
				t.Errorf("downstream CA URI SANs %v, want [spiffe://example.org]", ca.URIs)
			}
		})
	}
	t.Run("downstream SVID/PublishJWTAuthority", func(t *testing.T) {
		k := jwtKey(t)
		resp, err := bundlev1.NewBundleClient(conn).PublishJWTAuthority(callCtx(t), &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: k})
		if err != nil {
			t.Fatalf("PublishJWTAuthority with a downstream SVID: %v", err)
		}
		found := false
		for _, a := range resp.JwtAuthorities {
			found = found || a.KeyId == k.KeyId
		}
		if !found {
			t.Errorf("PublishJWTAuthority response lacks the published key %s", k.KeyId)
		}
	})
}
