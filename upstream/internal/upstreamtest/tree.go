package upstreamtest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream"
)

// callTimeout bounds every call a Tier makes to its server.
const callTimeout = 30 * time.Second

// Tier is a real arbor server running in this process, with an admin
// connection, for tests and benchmarks that build trees of tiers.
type Tier struct {
	Name   string
	Server *server.Server
	// Addr is the agent/downstream API's address.
	Addr string
	// NewTook is how long server.New took (datastore, CA minted through the
	// upstream, JWT key); ReadyTook is from the start of server.New until the
	// server served.
	NewTook, ReadyTook time.Duration

	td     spiffeid.TrustDomain
	admin  *grpc.ClientConn
	trust  *x509bundle.Bundle // authenticates the server's TLS certificate
	closer []func()
	done   chan error
	cancel context.CancelFunc
}

// StartTier runs server.New, Listen and Run with cfg and waits until the
// server serves. Empty Name, ListenAddr, StateDir and AdminSocket are filled
// in (a fresh short temporary directory, 127.0.0.1:0); the join_token node
// attestor is enabled. The tier stops with Stop or when the test ends.
func StartTier(tb testing.TB, cfg server.Config) *Tier {
	tb.Helper()
	dir, err := os.MkdirTemp("", "arb")
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "root"
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(dir, "state")
	}
	if cfg.AdminSocket == "" {
		cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	}
	cfg.JoinToken = true
	p := &Tier{Name: cfg.Name, td: cfg.TrustDomain, done: make(chan error, 1)}
	p.closer = append(p.closer, func() { os.RemoveAll(dir) })
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Errorf("tier %s: %v", p.Name, err)
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	start := time.Now()
	srv, err := server.New(ctx, cfg)
	p.NewTook = time.Since(start)
	if err != nil {
		tb.Fatalf("tier %s: server.New: %v", cfg.Name, err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatalf("tier %s: Listen: %v", cfg.Name, err)
	}
	p.Server, p.Addr = srv, srv.AgentAddr().String()
	go func() { p.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-p.done:
		p.done <- err
		tb.Fatalf("tier %s stopped before it was ready: %v", cfg.Name, err)
	case <-time.After(callTimeout):
		tb.Fatalf("tier %s not ready after %v", cfg.Name, callTimeout)
	}
	p.ReadyTook = time.Since(start)

	p.admin, err = grpc.NewClient("unix://"+cfg.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	p.trust = p.Bundle(tb)
	return p
}

// Stop stops the server and releases what the tier holds. It is idempotent.
func (p *Tier) Stop() error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.cancel = nil
	if p.admin != nil {
		p.admin.Close()
	}
	var err error
	if p.Server != nil {
		select {
		case err = <-p.done:
		case <-time.After(callTimeout):
			err = errors.New("server did not stop")
		}
	}
	for i := len(p.closer) - 1; i >= 0; i-- {
		p.closer[i]()
	}
	return err
}

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// Bundle returns the tier's X.509 trust bundle, read through the admin API.
func (p *Tier) Bundle(tb testing.TB) *x509bundle.Bundle {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	b, err := bundlev1.NewBundleClient(p.admin).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		tb.Fatalf("tier %s: GetBundle: %v", p.Name, err)
	}
	out := x509bundle.New(p.td)
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			tb.Fatal(err)
		}
		out.AddX509Authority(c)
	}
	return out
}

// dial connects to the agent API, authenticating the server as
// spiffe://<td>/spire/server against the tier's bundle and presenting svid
// when it is not nil.
func (p *Tier) dial(tb testing.TB, svid *x509svid.SVID) *grpc.ClientConn {
	tb.Helper()
	serverID := idpolicy.ServerID(p.td)
	tc := tlsconfig.TLSClientConfig(p.trust, tlsconfig.AuthorizeID(serverID))
	if svid != nil {
		tc = tlsconfig.MTLSClientConfig(svid, p.trust, tlsconfig.AuthorizeID(serverID))
	}
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		tb.Fatal(err)
	}
	return conn
}

// NewAgent creates a join token through the admin API, attests an agent with
// it over TLS and returns the agent's X509-SVID.
func (p *Tier) NewAgent(tb testing.TB) *x509svid.SVID {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	jt, err := agentv1.NewAgentClient(p.admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		tb.Fatalf("tier %s: CreateJoinToken: %v", p.Name, err)
	}
	conn := p.dial(tb, nil)
	defer conn.Close()
	key := NewKey(tb)
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		tb.Fatalf("tier %s: AttestAgent: %v", p.Name, err)
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(jt.Value)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr(tb, key)},
	}}}); err != nil {
		tb.Fatalf("tier %s: AttestAgent send: %v", p.Name, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		tb.Fatalf("tier %s: AttestAgent: %v", p.Name, err)
	}
	stream.CloseSend()
	if resp.GetResult() == nil {
		tb.Fatalf("tier %s: attestation response without a result: %v", p.Name, resp)
	}
	return svidOf(tb, resp.GetResult().Svid, key)
}

// CreateEntry creates a registration entry through the admin API and
// returns its ID.
func (p *Tier) CreateEntry(tb testing.TB, e *types.Entry) string {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := entryv1.NewEntryClient(p.admin).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{e}})
	if err != nil {
		tb.Fatalf("tier %s: BatchCreateEntry: %v", p.Name, err)
	}
	if r := resp.Results[0]; r.Status.Code != 0 {
		tb.Fatalf("tier %s: BatchCreateEntry: %v", p.Name, r.Status)
	}
	return resp.Results[0].Entry.Id
}

// WorkloadSVID has agent mint the X509-SVID of entryID, as an agent does for
// the workloads it serves.
func (p *Tier) WorkloadSVID(tb testing.TB, agent *x509svid.SVID, entryID string) (*x509svid.SVID, error) {
	tb.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	conn := p.dial(tb, agent)
	defer conn.Close()
	key := NewKey(tb)
	resp, err := svidv1.NewSVIDClient(conn).BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{
		Params: []*svidv1.NewX509SVIDParams{{EntryId: entryID, Csr: csr(tb, key)}},
	})
	if err != nil {
		return nil, err
	}
	if r := resp.Results[0]; r.Status.Code != 0 {
		return nil, fmt.Errorf("BatchNewX509SVID: %v", r.Status)
	}
	return svidOf(tb, resp.Results[0].Svid, key), nil
}

// ProtoID is the API form of the SPIFFE ID with path in td.
func ProtoID(td spiffeid.TrustDomain, path string) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: td.Name(), Path: path}
}

// staticSource serves one SVID and one bundle, as a co-located agent's
// Workload API would.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle, nil
}

// StartChild starts a downstream tier under p the way a deployment does: an
// agent attests to p, p holds a downstream entry spiffe://<td>/tier/<name>
// parented to that agent, and the child's upstream is the downstream package
// authenticated by that entry's X509-SVID. The child asks for caTTL.
func (p *Tier) StartChild(tb testing.TB, name string, caTTL time.Duration) *Tier {
	tb.Helper()
	agent := p.NewAgent(tb)
	entryID := p.CreateEntry(tb, &types.Entry{
		ParentId: ProtoID(p.td, agent.ID.Path()), SpiffeId: ProtoID(p.td, "/tier/"+name),
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:0"}}, Downstream: true,
	})
	svid, err := p.WorkloadSVID(tb, agent, entryID)
	if err != nil {
		tb.Fatalf("tier %s: downstream SVID for %s: %v", p.Name, name, err)
	}
	ctx, cancel := callCtx()
	defer cancel()
	up, err := downstream.New(ctx, downstream.Config{
		TrustDomain: p.td, ParentAddress: p.Addr,
		Source: staticSource{svid: svid, bundle: p.Bundle(tb)},
	})
	if err != nil {
		tb.Fatalf("downstream.New for %s: %v", name, err)
	}
	child := StartTier(tb, server.Config{Name: name, TrustDomain: p.td, Parent: up, CATTL: caTTL, ParentBundleSyncInterval: time.Second})
	child.closer = append(child.closer, func() { up.Close() })
	return child
}

// TreeChainsToRoot runs a root tier whose CA comes from up, a regional tier
// under it and a leaf tier under that, attests an agent to the leaf and has
// it mint a workload X509-SVID. The SVID must verify against a bundle that
// holds only root (the external PKI's root), and its chain must be exactly:
// the SVID, the leaf CA, the regional CA, the root tier's CA, then
// intermediates (the external PKI's certificates below root, issuer first).
// Every tier's bundle must hold root and nothing else.
func TreeChainsToRoot(t *testing.T, td spiffeid.TrustDomain, up upstream.Authority, root *x509.Certificate, intermediates []*x509.Certificate) {
	t.Helper()
	rootTier := StartTier(t, server.Config{Name: "root", TrustDomain: td, Upstream: up})
	regional := rootTier.StartChild(t, "regional", 4*time.Hour)
	leaf := regional.StartChild(t, "leaf", 2*time.Hour)

	agent := leaf.NewAgent(t)
	entryID := leaf.CreateEntry(t, &types.Entry{
		ParentId: ProtoID(td, agent.ID.Path()), SpiffeId: ProtoID(td, "/leaf/app"),
		Selectors: []*types.Selector{{Type: "unix", Value: "uid:1"}},
	})
	svid, err := leaf.WorkloadSVID(t, agent, entryID)
	if err != nil {
		t.Fatalf("workload SVID from the leaf tier: %v", err)
	}

	external := x509bundle.New(td)
	external.AddX509Authority(root)
	_, verified, err := x509svid.Verify(svid.Certificates, external)
	if err != nil {
		t.Fatalf("leaf workload SVID does not verify against the external root alone: %v", err)
	}
	if top := verified[0][len(verified[0])-1]; !top.Equal(root) {
		t.Errorf("verified chain ends at %q, want the external root %q", top.Subject, root.Subject)
	}
	if _, _, err := x509svid.Verify(svid.Certificates[:len(svid.Certificates)-len(intermediates)], external); len(intermediates) > 0 && err == nil {
		t.Errorf("the SVID verifies without the external intermediates; the test does not exercise them")
	}

	want := []string{"workload SVID"}
	wantCerts := []*x509.Certificate{svid.Certificates[0]}
	for _, tier := range []*Tier{leaf, regional, rootTier} {
		c, _ := tier.Server.CA().X509CA()
		want = append(want, tier.Name+" tier CA")
		wantCerts = append(wantCerts, c)
	}
	for _, c := range intermediates {
		want = append(want, "external "+c.Subject.CommonName)
		wantCerts = append(wantCerts, c)
	}
	if len(svid.Certificates) != len(wantCerts) {
		t.Errorf("SVID chain has %d certificates %v, want %d: %v", len(svid.Certificates), commonNames(svid.Certificates), len(want), want)
	} else {
		for i, c := range svid.Certificates {
			if !c.Equal(wantCerts[i]) {
				t.Errorf("SVID chain[%d] = %q, want the %s", i, c.Subject, want[i])
			}
		}
	}

	for _, tier := range []*Tier{rootTier, regional, leaf} {
		got := tier.Bundle(t).X509Authorities()
		if len(got) != 1 || !got[0].Equal(root) {
			t.Errorf("tier %s bundle = %v, want only the external root %q", tier.Name, commonNames(got), root.Subject.CommonName)
		}
	}
}

func commonNames(certs []*x509.Certificate) []string {
	out := make([]string, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func csr(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func svidOf(tb testing.TB, p *types.X509SVID, key crypto.Signer) *x509svid.SVID {
	tb.Helper()
	chain := make([]*x509.Certificate, 0, len(p.CertChain))
	for _, der := range p.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			tb.Fatal(err)
		}
		chain = append(chain, c)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		tb.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}
