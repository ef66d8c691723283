// Package bench holds arbor's Go benchmarks that run a real server over real
// gRPC and TLS on loopback. Each reports ratios against a baseline measured
// in the same run (the raw signing limit, or the same call at a smaller
// scale), never a lone absolute timing.
//
//	go test ./test/bench -run '^$' -bench . -benchtime 1x
package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
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
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type env struct {
	b      *testing.B
	admin  *grpc.ClientConn
	addr   string
	bundle *x509bundle.Bundle
	agent  *x509svid.SVID
}

func check(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

func startServer(b *testing.B, mutate func(*server.Config)) *env {
	b.Helper()
	dir := testkit.ShortDir(b)
	cfg := server.Config{
		Name: "bench", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "a.sock"), StateDir: filepath.Join(dir, "state"), JoinToken: true,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv := testkit.StartServer(b, cfg)
	e := &env{b: b, admin: srv.Admin, addr: srv.AgentAddr().String(), bundle: x509bundle.New(td)}
	bun, err := bundlev1.NewBundleClient(srv.Admin).GetBundle(context.Background(), &bundlev1.GetBundleRequest{})
	check(b, err)
	for _, a := range bun.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		check(b, err)
		e.bundle.AddX509Authority(c)
	}
	e.agent = e.attest()
	return e
}

type svidSource struct{ s *x509svid.SVID }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

func (e *env) dial(svid *x509svid.SVID) *grpc.ClientConn {
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/spire/server"))
	var tc *tls.Config
	if svid == nil {
		tc = tlsconfig.TLSClientConfig(e.bundle, authz)
	} else {
		tc = tlsconfig.MTLSClientConfig(svidSource{svid}, e.bundle, authz)
	}
	c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	check(e.b, err)
	e.b.Cleanup(func() { c.Close() })
	return c
}

func csr(b *testing.B) (*ecdsa.PrivateKey, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(b, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	check(b, err)
	return key, der
}

func (e *env) attest() *x509svid.SVID {
	ctx := context.Background()
	jt, err := agentv1.NewAgentClient(e.admin).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	check(e.b, err)
	key, der := csr(e.b)
	stream, err := agentv1.NewAgentClient(e.dial(nil)).AttestAgent(ctx)
	check(e.b, err)
	check(e.b, stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data: &types.AttestationData{Type: "join_token", Payload: []byte(jt.Value)}, Params: &agentv1.AgentX509SVIDParams{Csr: der}}}}))
	resp, err := stream.Recv()
	check(e.b, err)
	var chain []*x509.Certificate
	for _, c := range resp.GetResult().Svid.CertChain {
		cert, err := x509.ParseCertificate(c)
		check(e.b, err)
		chain = append(chain, cert)
	}
	id, err := x509svid.IDFromCert(chain[0])
	check(e.b, err)
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// seed creates n entries through the admin socket in batches of 500. The
// first `own` are parented to the benchmark agent, the rest spread over 1,000
// other parents.
func (e *env) seed(from, n, own int) []string {
	ctx := context.Background()
	client := entryv1.NewEntryClient(e.admin)
	var ids []string
	for start := from; start < from+n; start += 500 {
		var batch []*types.Entry
		for i := start; i < min(start+500, from+n); i++ {
			parent := fmt.Sprintf("/spire/agent/join_token/other-%d", i%1000)
			if i < own {
				parent = e.agent.ID.Path()
			}
			batch = append(batch, &types.Entry{
				ParentId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: parent},
				SpiffeId:  &types.SPIFFEID{TrustDomain: td.Name(), Path: fmt.Sprintf("/workload/%d", i)},
				Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}, {Type: "k8s", Value: "ns:default"}},
			})
		}
		resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: batch})
		check(e.b, err)
		for _, r := range resp.Results {
			if r.Status.Code != 0 {
				e.b.Fatalf("seed: %v", r.Status)
			}
			ids = append(ids, r.Entry.Id)
		}
	}
	return ids
}

// rawSigningRate measures SVIDs/s the machine can do with the same crypto the
// server must do per SVID: check the CSR signature, build and sign an X.509
// certificate with an ECDSA P-256 CA key. All cores, no RPC.
func rawSigningRate(b *testing.B, csrs [][]byte, d time.Duration) float64 {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(b, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{{Scheme: "spiffe", Host: td.Name()}}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	check(b, err)
	ca, err := x509.ParseCertificate(caDER)
	check(b, err)
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline); i++ {
				req, err := x509.ParseCertificateRequest(csrs[i%len(csrs)])
				if err != nil || req.CheckSignature() != nil {
					panic("bad csr")
				}
				serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
				tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Organization: []string{"SPIRE"}},
					NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					URIs:        []*url.URL{{Scheme: "spiffe", Host: td.Name(), Path: "/w"}}}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca, req.PublicKey, caKey); err != nil {
					panic(err)
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// BenchmarkBatchNewX509SVID reports X509-SVID issuance over gRPC+TLS on
// loopback as a fraction of the raw signing limit measured in the same run.
func BenchmarkBatchNewX509SVID(b *testing.B) {
	e := startServer(b, nil)
	ids := e.seed(0, 50, 50)
	csrs := make([][]byte, 200)
	for i := range csrs {
		_, csrs[i] = csr(b)
	}
	const window = 3 * time.Second
	raw := rawSigningRate(b, csrs, window)

	conns := []*grpc.ClientConn{e.dial(e.agent), e.dial(e.agent)}
	var n atomic.Int64
	deadline := time.Now().Add(window)
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range 8 {
		wg.Go(func() {
			client := svidv1.NewSVIDClient(conns[w%len(conns)])
			for i := 0; time.Now().Before(deadline); i++ {
				params := make([]*svidv1.NewX509SVIDParams, len(ids))
				for j, id := range ids {
					params[j] = &svidv1.NewX509SVIDParams{EntryId: id, Csr: csrs[(i*len(ids)+j+w)%len(csrs)]}
				}
				resp, err := client.BatchNewX509SVID(context.Background(), &svidv1.BatchNewX509SVIDRequest{Params: params})
				if err != nil {
					b.Error(err)
					return
				}
				for _, r := range resp.Results {
					if r.Status.Code != 0 {
						b.Error(r.Status)
						return
					}
				}
				n.Add(int64(len(resp.Results)))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	served := float64(n.Load()) / window.Seconds()
	b.ReportMetric(raw, "raw_svids/s")
	b.ReportMetric(served, "arbor_svids/s")
	b.ReportMetric(served/raw, "ratio_to_raw")
}

// BenchmarkAuthorizedEntriesScaling reports the cost of one agent's
// GetAuthorizedEntries (10 own entries) at 10k and at 100k total entries, same
// agent, same run, on SQLite and PostgreSQL.
func BenchmarkAuthorizedEntriesScaling(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			var mutate func(*server.Config)
			if backend == "postgres" {
				dsn := postgresDSN(b)
				mutate = func(c *server.Config) { c.Datastore, c.PostgresDSN = "postgres", dsn }
			}
			e := startServer(b, mutate)
			client := entryv1.NewEntryClient(e.dial(e.agent))
			measure := func() time.Duration {
				const calls = 2000
				start := time.Now()
				for range calls {
					resp, err := client.GetAuthorizedEntries(context.Background(), &entryv1.GetAuthorizedEntriesRequest{})
					check(b, err)
					if len(resp.Entries) != 10 {
						b.Fatalf("authorized entries = %d, want 10", len(resp.Entries))
					}
				}
				return time.Since(start) / calls
			}
			e.seed(0, 10_000, 10)
			measure() // warm up
			at10k := measure()
			seedStart := time.Now()
			e.seed(10_000, 90_000, 10)
			seedRate := 90_000 / time.Since(seedStart).Seconds()
			at100k := measure()
			b.ReportMetric(float64(at10k.Microseconds()), "us/call@10k")
			b.ReportMetric(float64(at100k.Microseconds()), "us/call@100k")
			b.ReportMetric(float64(at100k)/float64(at10k), "ratio_100k/10k")
			b.ReportMetric(seedRate, "entries_created/s")
		})
	}
}
