package server_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/internal/testkit/freeport"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// clock is the shared settable test clock.
type clock = testkit.Clock

func newClock() *clock                    { return &clock{} }
func spiffeID(path string) spiffeid.ID    { return spiffeid.RequireFromPath(td, path) }
func protoID(path string) *types.SPIFFEID { return &types.SPIFFEID{TrustDomain: td.Name(), Path: path} }
func sel(t, v string) *types.Selector     { return &types.Selector{Type: t, Value: v} }
func ctxT(t *testing.T) context.Context   { return testCtx(t, 60*time.Second) }
func shortDir(t *testing.T) string        { return mkShortDir(t) }
func agentPath(token string) string       { return "/spire/agent/join_token/" + token }
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context { return testkit.Context(t, d) }
func mkShortDir(t *testing.T) string                        { return testkit.ShortDir(t) }

// harness is a running in-process server with clients for every kind of caller.
type harness struct {
	t      *testing.T
	cfg    server.Config
	srv    *server.Server
	stop   func()
	admin  *grpc.ClientConn
	clock  *clock
	bundle *x509bundle.Bundle
}

type option func(*server.Config)

func startServer(t *testing.T, opts ...option) *harness {
	t.Helper()
	return startServerOn(t, newClock(), opts...)
}

func (h *harness) start() {
	t := h.t
	t.Helper()
	ts := testkit.StartServer(t, h.cfg)
	// Keep the same port across restarts.
	h.cfg.ListenAddr = ts.AgentAddr().String()
	h.srv, h.admin = ts.Server, ts.Admin
	h.stop = func() { ts.Stop(t) }
	b, err := bundlev1.NewBundleClient(h.admin).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle on admin socket: %v", err)
	}
	h.bundle = x509bundle.New(td)
	for _, a := range b.X509Authorities {
		h.bundle.AddX509Authority(must(x509.ParseCertificate(a.Asn1))(t))
	}
}

func (h *harness) restart() {
	h.stop()
	h.start()
}

// svidSource is a fixed X509-SVID for a client.
type svidSource struct{ svid *x509svid.SVID }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

// dial opens a TLS connection to the agent API, authenticating the server as
// spiffe://example.org/spire/server; with svid non-nil it presents it.
func (h *harness) dial(svid *x509svid.SVID) *grpc.ClientConn {
	h.t.Helper()
	tc := h.clientTLS()
	if svid != nil {
		tc.GetClientCertificate = tlsconfig.GetClientCertificate(svidSource{svid})
	}
	conn, err := grpc.NewClient(h.cfg.ListenAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return conn
}

// clientTLS verifies the server's X509-SVID spiffe://example.org/spire/server
// against the harness bundle at the harness clock's time (so tests that move
// the server's clock still connect).
func (h *harness) clientTLS() *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // verified below as an X509-SVID
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := x509svid.ParseAndVerify(raw, h.bundle, x509svid.WithTime(h.clock.Now()))
			if err != nil {
				return err
			}
			if id != spiffeID("/spire/server") {
				return fmt.Errorf("server presented %s, want spiffe://example.org/spire/server", id)
			}
			return nil
		},
	}
}

// dialRawCert presents an arbitrary certificate chain and key.
func (h *harness) dialRawCert(chain []*x509.Certificate, key crypto.Signer) *grpc.ClientConn {
	h.t.Helper()
	tc := h.clientTLS()
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	conn, err := grpc.NewClient(h.cfg.ListenAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return conn
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
}

func csrFor(t *testing.T, key crypto.Signer, uris ...*url.URL) []byte {
	t.Helper()
	return must(x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, URIs: uris}, key))(t)
}

func svidFrom(t *testing.T, p *types.X509SVID, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range p.CertChain {
		chain = append(chain, must(x509.ParseCertificate(der))(t))
	}
	id := must(x509svid.IDFromCert(chain[0]))(t)
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// token creates a join token through the admin socket.
func (h *harness) token(ttl int32) string {
	h.t.Helper()
	jt, err := agentv1.NewAgentClient(h.admin).CreateJoinToken(ctxT(h.t), &agentv1.CreateJoinTokenRequest{Ttl: ttl})
	if err != nil {
		h.t.Fatalf("CreateJoinToken: %v", err)
	}
	return jt.Value
}

// attest runs join-token attestation over an anonymous TLS connection.
func (h *harness) attest(token string) (*x509svid.SVID, error) {
	h.t.Helper()
	key := newKey(h.t)
	stream, err := agentv1.NewAgentClient(h.dial(nil)).AttestAgent(ctxT(h.t))
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(h.t, key)},
	}}}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	stream.CloseSend()
	r := resp.GetResult()
	if r == nil {
		return nil, fmt.Errorf("attestation response has no result: %v", resp)
	}
	return svidFrom(h.t, r.Svid, key), nil
}

// newAgent attests a fresh agent and returns its SVID.
func (h *harness) newAgent() *x509svid.SVID {
	h.t.Helper()
	svid, err := h.attest(h.token(600))
	if err != nil {
		h.t.Fatalf("attest: %v", err)
	}
	return svid
}

// createEntry creates an entry through the admin socket and returns its ID.
func (h *harness) createEntry(e *types.Entry) string {
	h.t.Helper()
	resp, err := entryv1.NewEntryClient(h.admin).BatchCreateEntry(ctxT(h.t), &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		h.t.Fatalf("BatchCreateEntry: %v", err)
	}
	r := resp.Results[0]
	if r.Status.Code != 0 {
		h.t.Fatalf("BatchCreateEntry status: %v", r.Status)
	}
	return r.Entry.Id
}

// workloadSVID has agent mint an X509-SVID for entryID.
func (h *harness) workloadSVID(agent *x509svid.SVID, entryID string) (*x509svid.SVID, error) {
	h.t.Helper()
	key := newKey(h.t)
	resp, err := svidv1.NewSVIDClient(h.dial(agent)).BatchNewX509SVID(ctxT(h.t), &svidv1.BatchNewX509SVIDRequest{
		Params: []*svidv1.NewX509SVIDParams{{EntryId: entryID, Csr: csrFor(h.t, key)}},
	})
	if err != nil {
		return nil, err
	}
	r := resp.Results[0]
	if r.Status.Code != 0 {
		return nil, fmt.Errorf("BatchNewX509SVID: %v", r.Status)
	}
	return svidFrom(h.t, r.Svid, key), nil
}

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string { return freeport.Addr(t) }

// snapshotBundle returns the server's current X.509 bundle.
func (h *harness) snapshotBundle() *x509bundle.Bundle {
	h.t.Helper()
	b := x509bundle.New(td)
	for _, a := range h.snapshot().Bundle.X509Authorities {
		b.AddX509Authority(must(x509.ParseCertificate(a.Asn1))(h.t))
	}
	return b
}
