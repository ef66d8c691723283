package api

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/internal/datastore/sqlite"
	"github.com/arborid/arbor/internal/entrycache"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/internal/trustbundle"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func idOf(path string) spiffeid.ID { return spiffeid.RequireFromPath(td, path) }

// testCA is a fake Signer: a self-signed root that signs whatever it is
// asked, so handler tests control every certificate without a CA manager.
type testCA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	serial atomic.Int64
	fail   error // returned by every Sign call when set
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCA{key: key}
	c.cert, _ = x509.ParseCertificate(der)
	c.serial.Store(1)
	return c
}

func (c *testCA) issue(t testing.TB, id spiffeid.ID, pub crypto.PublicKey) *x509.Certificate {
	cert, err := c.sign(&x509.Certificate{URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}, pub, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func (c *testCA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	if c.fail != nil {
		return nil, c.fail
	}
	tmpl.SerialNumber = big.NewInt(c.serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(ttl)
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func (c *testCA) SignX509SVID(_ context.Context, p ca.X509SVIDParams) ([]*x509.Certificate, error) {
	cert, err := c.sign(&x509.Certificate{URIs: []*url.URL{p.ID.URL()}, DNSNames: p.DNSNames, KeyUsage: x509.KeyUsageDigitalSignature}, p.PublicKey, time.Hour)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{cert}, nil
}

func (c *testCA) SignJWTSVID(_ context.Context, id spiffeid.ID, _ []string, _ time.Duration) (string, time.Time, time.Time, error) {
	if c.fail != nil {
		return "", time.Time{}, time.Time{}, c.fail
	}
	now := time.Now()
	return "jwt-for-" + id.String(), now, now.Add(5 * time.Minute), nil
}

func (c *testCA) SignDownstreamX509CA(_ context.Context, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error) {
	cert, err := c.sign(&x509.Certificate{IsCA: true, URIs: []*url.URL{td.ID().URL()}, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, pub, ttl)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{cert}, nil
}

func (c *testCA) PruneBundle(context.Context, time.Duration) (ca.PruneResult, error) {
	return ca.PruneResult{}, nil
}

// testService is a Service over a real SQLite file and the fake CA.
type testService struct {
	*Service
	ca    *testCA
	store datastore.Store
}

func newTestService(t *testing.T) *testService {
	t.Helper()
	ctx := testContext(t)
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "arbor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	tca := newTestCA(t)
	if _, err := store.UpdateBundle(ctx, td, func(*datastore.Bundle) (*datastore.Bundle, error) {
		return &datastore.Bundle{TrustDomain: td, X509Authorities: []datastore.X509Authority{{Cert: tca.cert.Raw}}, SequenceNumber: 1}, nil
	}); err != nil {
		t.Fatal(err)
	}
	bundles := trustbundle.New(store, td)
	if err := bundles.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, Config{TrustDomain: td, Store: store, Entries: entrycache.New(td), Bundles: bundles, CA: tca})
	if err != nil {
		t.Fatal(err)
	}
	return &testService{Service: s, ca: tca, store: store}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// asPeer returns ctx as seen by a handler for a TLS caller presenting cert
// (nil: no client certificate).
func asPeer(ctx context.Context, cert *x509.Certificate) context.Context {
	var state tls.ConnectionState
	if cert != nil {
		state.PeerCertificates = []*x509.Certificate{cert}
	}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
}

// asLocal is ctx as seen on the admin socket.
func asLocal(ctx context.Context) context.Context {
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: localAuthInfo{}})
}

// agent stores an attested node for a fresh agent ID and returns its
// certificate.
func (ts *testService) agent(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := ts.ca.issue(t, idOf(path), key.Public())
	n := &datastore.Node{ID: idOf(path), AttestationType: "join_token", CertSerial: cert.SerialNumber.String(), CertNotAfter: cert.NotAfter.Unix()}
	if _, err := ts.writeNode(testContext(t), n.ID, func() (*datastore.Node, error) {
		return ts.store.AttestNode(testContext(t), n, datastore.AttestCondition{})
	}); err != nil {
		t.Fatal(err)
	}
	return cert
}

// entry creates a registration entry through the handler's path.
func (ts *testService) entry(t *testing.T, e *datastore.Entry) *datastore.Entry {
	t.Helper()
	out, errs := ts.createEntries(testContext(t), []*datastore.Entry{e})
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	return out[0]
}

func TestStatusForMapsErrorsByWhatTheySay(t *testing.T) {
	ts := newTestService(t)
	tests := []struct {
		err  error
		want string
	}{
		{ca.ErrInvalidArgument, "InvalidArgument"},
		{ca.ErrNotInitialized, "Unavailable"},
		{datastore.ErrNotFound, "NotFound"},
		{datastore.ErrAlreadyExists, "AlreadyExists"},
		{datastore.ErrConflict, "Aborted"},
		{datastore.ErrBanned, "PermissionDenied"},
		{errors.New("disk on fire"), "Internal"},
	}
	for _, tt := range tests {
		wrapped := errors.Join(errors.New("context"), tt.err)
		err := ts.statusFor(testContext(t), "doing it", wrapped)
		if got := statusCode(err); got != tt.want {
			t.Errorf("statusFor(%v) = %v, want %s", tt.err, err, tt.want)
		}
		if tt.want == "Internal" && containsText(err, "disk on fire") {
			t.Errorf("statusFor(%v) = %v leaks the cause to the caller", tt.err, err)
		}
	}
}

// TestAuthorizeMatrix: each caller kind against each rule, at the unit
// level (the end-to-end matrix over TLS is internal/server's
// TestAuthorizationMatrix).
func TestAuthorizeMatrix(t *testing.T) {
	ts := newTestService(t)
	ctx := testContext(t)
	agentCert := ts.agent(t, "/spire/agent/join_token/a")
	bannedCert := ts.agent(t, "/spire/agent/join_token/banned")
	if _, err := ts.writeNode(ctx, idOf("/spire/agent/join_token/banned"), func() (*datastore.Node, error) {
		return ts.store.BanNode(ctx, idOf("/spire/agent/join_token/banned"))
	}); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ts.entry(t, &datastore.Entry{SPIFFEID: idOf("/tier/child"), ParentID: idOf("/spire/agent/join_token/a"), Selectors: sel("unix:uid:1"), Downstream: true})
	ts.entry(t, &datastore.Entry{SPIFFEID: idOf("/ops"), ParentID: idOf("/spire/agent/join_token/a"), Selectors: sel("unix:uid:2"), Admin: true})
	downstreamCert := ts.ca.issue(t, idOf("/tier/child"), key.Public())
	adminCert := ts.ca.issue(t, idOf("/ops"), key.Public())
	workloadCert := ts.ca.issue(t, idOf("/web"), key.Public())
	// An agent SVID with the right ID but a serial the node does not hold
	// (an old or forged one from the same CA).
	staleAgent := ts.ca.issue(t, idOf("/spire/agent/join_token/a"), key.Public())

	callers := []struct {
		name    string
		ctx     context.Context
		allowed map[Rule]bool
	}{
		{"anonymous", asPeer(ctx, nil), map[Rule]bool{RuleAnyone: true}},
		{"admin socket", asLocal(ctx), map[Rule]bool{RuleAnyone: true, RuleAdmin: true, RuleAdminOrAgent: true, RuleAdminOrDownstream: true}},
		{"admin SVID", asPeer(ctx, adminCert), map[Rule]bool{RuleAnyone: true, RuleAdmin: true, RuleAdminOrAgent: true, RuleAdminOrDownstream: true}},
		{"agent", asPeer(ctx, agentCert), map[Rule]bool{RuleAnyone: true, RuleAgent: true, RuleAdminOrAgent: true}},
		{"banned agent", asPeer(ctx, bannedCert), map[Rule]bool{RuleAnyone: true}},
		{"agent with a serial not its own", asPeer(ctx, staleAgent), map[Rule]bool{RuleAnyone: true}},
		{"downstream", asPeer(ctx, downstreamCert), map[Rule]bool{RuleAnyone: true, RuleDownstream: true, RuleAdminOrDownstream: true}},
		{"workload", asPeer(ctx, workloadCert), map[Rule]bool{RuleAnyone: true}},
	}
	for _, c := range callers {
		for method, rule := range rules {
			_, err := ts.authorize(c.ctx, method)
			if got, want := err == nil, c.allowed[rule]; got != want {
				t.Errorf("%s calling %s (rule %s): allowed = %v (%v), want %v", c.name, method, rule, got, err, want)
			}
		}
	}
	if _, err := ts.authorize(asLocal(ctx), "/spire.api.server.svid.v1.SVID/MintWITSVID"); statusCode(err) != "Unimplemented" {
		t.Errorf("a WIT method (no rule, not served), from the admin socket: %v, want Unimplemented", err)
	}
	if _, err := ts.authorize(asLocal(ctx), "/spire.api.server.svid.v1.SVID/NoSuchMethod"); statusCode(err) != "PermissionDenied" {
		t.Errorf("a method without a rule, from the admin socket: %v, want PermissionDenied", err)
	}
}

// TestNodeIndexFollowsTheStoreAfterAnotherServersBan: a ban written by
// another server (straight into the shared store, not yet polled) is not
// undone by this server's writes from its stale copy, and the first refused
// write brings this server's index to the stored state.
func TestNodeIndexFollowsTheStoreAfterAnotherServersBan(t *testing.T) {
	ts := newTestService(t)
	ctx := testContext(t)
	cert := ts.agent(t, "/spire/agent/join_token/x")
	id := idOf("/spire/agent/join_token/x")
	if _, err := ts.store.BanNode(ctx, id); err != nil { // the other server
		t.Fatal(err)
	}
	// Still authorized from the stale index; the renewal is refused by the
	// store's condition and the index learns the ban.
	callCtx, err := ts.authorize(asPeer(ctx, cert), "/spire.api.server.agent.v1.Agent/RenewAgent")
	if err != nil {
		t.Fatalf("authorize before this server learned of the ban: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	_, err = ts.RenewAgent(callCtx, renewRequest(csr))
	if statusCode(err) != "PermissionDenied" {
		t.Fatalf("RenewAgent after another server's ban: %v, want PermissionDenied", err)
	}
	if n, ok := ts.nodes.get(id); !ok || !n.Banned() {
		t.Fatalf("node index after the refused renewal: %+v, want banned", n)
	}
	if stored, err := ts.store.FetchNode(ctx, id); err != nil || !stored.Banned() {
		t.Fatalf("stored node after the refused renewal: %+v, %v; want still banned", stored, err)
	}
	if _, err := ts.authorize(asPeer(ctx, cert), "/spire.api.server.agent.v1.Agent/PostStatus"); statusCode(err) != "PermissionDenied" {
		t.Errorf("authorize after the index learned of the ban: %v, want PermissionDenied", err)
	}
	if _, err := ts.authorize(asPeer(ctx, cert), "/spire.api.server.entry.v1.Entry/GetAuthorizedEntries"); !hasReason(err, types.PermissionDeniedDetails_AGENT_BANNED) {
		t.Errorf("denial after the ban = %v, want reason AGENT_BANNED", err)
	}
}

func sel(ss ...string) []selector.Selector {
	out := make([]selector.Selector, 0, len(ss))
	for _, s := range ss {
		v, err := selector.Parse(s)
		if err != nil {
			panic(err)
		}
		out = append(out, v)
	}
	return out
}

func statusCode(err error) string { return status.Code(err).String() }

func containsText(err error, text string) bool {
	return err != nil && strings.Contains(err.Error(), text)
}

func renewRequest(csr []byte) *agentv1.RenewAgentRequest {
	return &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}}
}

// hasReason reports whether err is PermissionDenied with the reason detail
// spire-agent acts on.
func hasReason(err error, reason types.PermissionDeniedDetails_Reason) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return false
	}
	for _, d := range st.Details() {
		if pd, ok := d.(*types.PermissionDeniedDetails); ok && pd.Reason == reason {
			return true
		}
	}
	return false
}
