package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit/freeport"
)

// x509Watcher records every X509 context a stream receives.
type x509Watcher struct{ ch chan *workloadapi.X509Context }

func (w x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w x509Watcher) OnX509ContextWatchError(error)                  {}

func watchX509(t *testing.T, sock string) chan *workloadapi.X509Context {
	ch := make(chan *workloadapi.X509Context, 100)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(sock))
	mustOK(t, err, "workload client")
	done := make(chan struct{})
	go func() { defer close(done); c.WatchX509Context(ctx, x509Watcher{ch}) }()
	t.Cleanup(func() { cancel(); c.Close(); <-done })
	return ch
}

func next(t *testing.T, ch chan *workloadapi.X509Context, d time.Duration, what string) *workloadapi.X509Context {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(d):
		t.Fatalf("no X509 context update: %s within %v", what, d)
		return nil
	}
}

// Open streams receive the renewed SVID before the old one expires, and a
// new CA published in the bundle reaches every stream.
func TestRotationAndBundleChange(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 4)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)

	streams := []chan *workloadapi.X509Context{watchX509(t, socketAddr(cfg)), watchX509(t, socketAddr(cfg))}
	for i, ch := range streams {
		first := leafOf(next(t, ch, 10*time.Second, "first SVID"))
		if got := time.Until(first.NotAfter); got > 5*time.Second {
			t.Fatalf("SVID expires in %v, want about 4s", got)
		}
		for {
			c := next(t, ch, 10*time.Second, "renewed SVID")
			leaf := leafOf(c)
			if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
				continue
			}
			if !time.Now().Before(first.NotAfter) {
				t.Errorf("stream %d: renewed SVID arrived at %v, after the old one expired at %v", i, time.Now(), first.NotAfter)
			}
			break
		}
	}

	// Publish a new root through the admin API.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "new root"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	mustOK(t, err, "new root")
	_, err = bundlev1.NewBundleClient(srv.admin).AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: der}},
	})
	mustOK(t, err, "AppendBundle")
	for i, ch := range streams {
		for {
			c := next(t, ch, 10*time.Second, "bundle with the new root")
			b, ok := c.Bundles.Get(td)
			if ok && hasCert(b.X509Authorities(), der) {
				break
			}
		}
		_ = i
	}
	// The bundle stream sees it too.
	bctx := ctxT(t)
	bs, err := workloadapi.FetchX509Bundles(bctx, workloadapi.WithAddr(socketAddr(cfg)))
	mustOK(t, err, "FetchX509Bundles")
	if b, _ := bs.Get(td); b == nil || !hasCert(b.X509Authorities(), der) {
		t.Error("FetchX509Bundles lacks the new root")
	}
}

func hasCert(certs []*x509.Certificate, der []byte) bool {
	for _, c := range certs {
		if string(c.Raw) == string(der) {
			return true
		}
	}
	return false
}

// With the server stopped, workloads keep getting the cached SVIDs; when it
// comes back the agent syncs again without a restart.
func TestServerOutageAndRecovery(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	aid := agentPath(token)
	srv.workloadEntry(aid, "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	cfg.HealthAddr = freeAddr(t)
	runAgent(t, cfg)
	ctx := ctxT(t)
	before, err := fetchX509(ctx, socketAddr(cfg))
	mustOK(t, err, "fetch before outage")

	srv.stop()
	// Let a sync fail, then fetch again: same cached SVID.
	poll(t, 10*time.Second, "agent notices the outage", func() error {
		return metricIs(cfg.HealthAddr, "arbor_agent_server_connected", "0")
	})
	during, err := fetchX509(ctx, socketAddr(cfg))
	mustOK(t, err, "fetch during outage")
	if !leafOf(during).Equal(leafOf(before)) {
		t.Error("during the outage the agent served a different SVID than it had cached")
	}
	jctx, jcancel := context.WithTimeout(ctx, 10*time.Second)
	defer jcancel()
	// JWT-SVID minting needs the server: a precise error, not a hang.
	_, err = workloadapi.FetchJWTSVID(jctx, jwtsvid.Params{Audience: "x"}, workloadapi.WithAddr(socketAddr(cfg)))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("FetchJWTSVID during outage = %v, want Unavailable", err)
	}

	srv.start()
	srv.workloadEntry(aid, "a2", 0)
	att.set(os.Getpid(), "a") // unchanged selectors; a2 needs test:id:a2
	poll(t, 20*time.Second, "agent recovers and syncs the new entry", func() error {
		return metricIs(cfg.HealthAddr, "arbor_agent_entries", "2")
	})
	if err := metricIs(cfg.HealthAddr, "arbor_agent_server_connected", "1"); err != nil {
		t.Error(err)
	}
}

func freeAddr(t *testing.T) string { return freeport.Addr(t) }

// metricIs checks one unlabelled metric's value on /metrics.
func metricIs(addr, name, want string) error {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, line := range strings.Split(sb.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if v == want {
				return nil
			}
			return fmt.Errorf("%s = %s, want %s", name, v, want)
		}
	}
	return fmt.Errorf("%s not found", name)
}

// A restarted agent uses its stored SVID: same ID, no new attestation (its
// join token is spent, so attesting again would fail).
func TestAgentRestartKeepsIdentity(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	first := runAgent(t, cfg)
	id := first.SPIFFEID()
	if err := first.stop(t); err != nil {
		t.Fatalf("first agent Run: %v", err)
	}
	for _, name := range []string{"agent-svid.pem", "agent-key.pem", "bundle.pem"} {
		fi, err := os.Stat(filepath.Join(cfg.DataDir, name))
		mustOK(t, err, "stat %s", name)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, fi.Mode().Perm())
		}
	}
	nodes := srv.countAgents()
	second := runAgent(t, cfg)
	if got := second.SPIFFEID(); got != id {
		t.Errorf("restarted agent ID = %v, want %v", got, id)
	}
	if got := srv.countAgents(); got != nodes {
		t.Errorf("server has %d agents after the restart, want %d", got, nodes)
	}
	if _, err := fetchX509(ctxT(t), socketAddr(cfg)); err != nil {
		t.Errorf("fetch after restart: %v", err)
	}
}

// A banned agent stops with ErrBanned and reports not ready.
func TestBannedAgentStops(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	att := newPIDAttestor()
	cfg := srv.agentConfig(t, token, att)
	cfg.HealthAddr = freeAddr(t)
	a := runAgent(t, cfg)
	_, err := agentv1.NewAgentClient(srv.admin).BanAgent(ctxT(t), &agentv1.BanAgentRequest{Id: protoID(a.SPIFFEID())})
	mustOK(t, err, "BanAgent")
	select {
	case err := <-a.done:
		close(a.done)
		if !errors.Is(err, agent.ErrBanned) {
			t.Errorf("Run = %v, want ErrBanned", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("banned agent kept running")
	}
}

// An evicted join-token agent cannot re-attest: it stops and forgets its SVID.
func TestEvictedJoinTokenAgentStops(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	cfg := srv.agentConfig(t, token, newPIDAttestor())
	a := runAgent(t, cfg)
	_, err := agentv1.NewAgentClient(srv.admin).DeleteAgent(ctxT(t), &agentv1.DeleteAgentRequest{Id: protoID(a.SPIFFEID())})
	mustOK(t, err, "DeleteAgent")
	select {
	case err := <-a.done:
		close(a.done)
		if !errors.Is(err, agent.ErrCannotReattest) {
			t.Errorf("Run = %v, want ErrCannotReattest", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("evicted agent kept running")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "agent-svid.pem")); !os.IsNotExist(err) {
		t.Errorf("evicted agent's SVID still stored: %v", err)
	}
}

// An x509pop agent attests, is refused renewal (it must re-attest) and
// re-attests with the same ID; evicted, it attests again.
func TestX509PoPReattest(t *testing.T) {
	pki, err := x509poptest.Generate(shortDir(t), x509poptest.GenerateOptions{})
	mustOK(t, err, "x509pop PKI")
	srv := startServer(t, func(c *server.Config) {
		c.X509PoP = &server.X509PoPConfig{CABundlePaths: []string{pki.CABundlePath}}
		c.AgentSVIDTTL = 4 * time.Second
	})
	cfg := srv.agentConfig(t, "", newPIDAttestor())
	cfg.X509PoP = &agent.X509PoPConfig{CertPath: pki.CertPath, KeyPath: pki.KeyPath}
	cfg.HealthAddr = freeAddr(t)
	a := runAgent(t, cfg)
	id := a.SPIFFEID()
	if !strings.HasPrefix(id.Path(), "/spire/agent/x509pop/") {
		t.Fatalf("agent ID %v, want an x509pop ID", id)
	}
	firstExpiry := expiryMetric(t, cfg.HealthAddr)
	poll(t, 20*time.Second, "agent SVID replaced by re-attestation", func() error {
		if e := expiryMetric(t, cfg.HealthAddr); e == firstExpiry {
			return errors.New("agent SVID unchanged")
		}
		return nil
	})
	if got := a.SPIFFEID(); got != id {
		t.Errorf("after re-attesting, agent ID = %v, want %v", got, id)
	}
	_, err = agentv1.NewAgentClient(srv.admin).DeleteAgent(ctxT(t), &agentv1.DeleteAgentRequest{Id: protoID(id)})
	mustOK(t, err, "DeleteAgent")
	poll(t, 20*time.Second, "evicted x509pop agent attests again", func() error {
		_, err := agentv1.NewAgentClient(srv.admin).GetAgent(ctxT(t), &agentv1.GetAgentRequest{Id: protoID(id)})
		return err
	})
	select {
	case err := <-a.done:
		t.Fatalf("x509pop agent stopped: %v", err)
	default:
	}
}

func expiryMetric(t *testing.T, addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	mustOK(t, err, "metrics")
	defer resp.Body.Close()
	buf := new(strings.Builder)
	_, _ = io.Copy(buf, resp.Body)
	for _, l := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "arbor_agent_svid_expiry_timestamp_seconds "); ok {
			return v
		}
	}
	t.Fatal("no arbor_agent_svid_expiry_timestamp_seconds")
	return ""
}

// Bad input gets a precise error and changes nothing.
func TestWorkloadAPIBadInput(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)
	ctx := ctxT(t)
	conn, err := grpc.NewClient(socketAddr(cfg), grpc.WithTransportCredentials(insecure.NewCredentials()))
	mustOK(t, err, "dial")
	defer conn.Close()
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")

	// A valid token from this agent, and one signed by a foreign key.
	valid, err := api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{Audience: []string{"aud1"}})
	mustOK(t, err, "FetchJWTSVID")
	foreign := foreignJWT(t, "spiffe://example.org/a", "aud1")

	tests := []struct {
		name    string
		call    func() error
		code    codes.Code
		message string
	}{
		{"no security header, unary", func() error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
			return err
		}, codes.InvalidArgument, "security header missing from request"},
		{"no security header, stream", func() error {
			s, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.InvalidArgument, "security header missing from request"},
		{"wrong security header value", func() error {
			_, err := api.FetchJWTSVID(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "false"), &workload.JWTSVIDRequest{Audience: []string{"x"}})
			return err
		}, codes.InvalidArgument, "security header missing from request"},
		{"no audience", func() error {
			_, err := api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{})
			return err
		}, codes.InvalidArgument, "audience must be specified"},
		{"empty audience", func() error {
			_, err := api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{Audience: []string{""}})
			return err
		}, codes.InvalidArgument, "audience must not contain an empty string"},
		{"bad requested SPIFFE ID", func() error {
			_, err := api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{Audience: []string{"x"}, SpiffeId: "http://nope"})
			return err
		}, codes.InvalidArgument, "invalid requested SPIFFE ID"},
		{"requested SPIFFE ID not mine", func() error {
			_, err := api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{Audience: []string{"x"}, SpiffeId: "spiffe://example.org/b"})
			return err
		}, codes.PermissionDenied, "no identity issued"},
		{"validate without audience", func() error {
			_, err := api.ValidateJWTSVID(withHeader, &workload.ValidateJWTSVIDRequest{Svid: valid.Svids[0].Svid})
			return err
		}, codes.InvalidArgument, "audience must be specified"},
		{"validate without token", func() error {
			_, err := api.ValidateJWTSVID(withHeader, &workload.ValidateJWTSVIDRequest{Audience: "aud1"})
			return err
		}, codes.InvalidArgument, "svid must be specified"},
		{"malformed JWT", func() error {
			_, err := api.ValidateJWTSVID(withHeader, &workload.ValidateJWTSVIDRequest{Audience: "aud1", Svid: "not.a.jwt"})
			return err
		}, codes.InvalidArgument, "jwtsvid: unable to parse JWT token"},
		{"JWT signed by a foreign key", func() error {
			_, err := api.ValidateJWTSVID(withHeader, &workload.ValidateJWTSVIDRequest{Audience: "aud1", Svid: foreign})
			return err
		}, codes.InvalidArgument, `jwtsvid: no JWT authority "foreign" found for trust domain "example.org"`},
		{"wrong audience", func() error {
			_, err := api.ValidateJWTSVID(withHeader, &workload.ValidateJWTSVIDRequest{Audience: "other", Svid: valid.Svids[0].Svid})
			return err
		}, codes.InvalidArgument, "expected audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.message) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.message)
			}
		})
	}
	// Nothing was cached wrongly: the valid token still validates.
	resp, err := api.ValidateJWTSVID(withHeader, &workload.ValidateJWTSVIDRequest{Audience: "aud1", Svid: valid.Svids[0].Svid})
	mustOK(t, err, "validating the good token")
	if resp.SpiffeId != "spiffe://example.org/a" {
		t.Errorf("validated subject %q", resp.SpiffeId)
	}
	// The same (entry, audience) is served from the JWT cache.
	again, err := api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{Audience: []string{"aud1"}})
	mustOK(t, err, "FetchJWTSVID again")
	if again.Svids[0].Svid != valid.Svids[0].Svid {
		t.Error("second FetchJWTSVID for the same audience minted a new token")
	}
}

// foreignJWT signs a JWT-SVID with a key no bundle holds.
func foreignJWT(t *testing.T, sub, aud string) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "foreign"))
	mustOK(t, err, "signer")
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour)), IssuedAt: jwt.NewNumericDate(time.Now())}).Serialize()
	mustOK(t, err, "signing")
	return tok
}

// A workload that matches no entry gets PermissionDenied "no identity
// issued" on streams and unary calls, as from spire-agent.
func TestNoIdentity(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	cfg := srv.agentConfig(t, token, newPIDAttestor()) // this pid has no selectors
	runAgent(t, cfg)
	conn, err := grpc.NewClient(socketAddr(cfg), grpc.WithTransportCredentials(insecure.NewCredentials()))
	mustOK(t, err, "dial")
	defer conn.Close()
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "workload.spiffe.io", "true")
	streams := map[string]func() error{
		"FetchX509SVID": func() error {
			s, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"FetchX509Bundles": func() error {
			s, err := api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"FetchJWTBundles": func() error {
			s, err := api.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"FetchJWTSVID": func() error {
			_, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
			return err
		},
	}
	for name, call := range streams {
		st := status.Convert(call())
		if st.Code() != codes.PermissionDenied || st.Message() != "no identity issued" {
			t.Errorf("%s = %v %q, want PermissionDenied \"no identity issued\"", name, st.Code(), st.Message())
		}
	}
}
