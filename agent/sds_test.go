package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arborid/arbor/agent"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sdsClient is go-control-plane's generated SDS client on an agent's
// socket, as Envoy connects: no workload.spiffe.io header.
func sdsClient(t *testing.T, cfg agent.Config) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+cfg.SocketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	mustOK(t, err, "dial %s", cfg.SocketPath)
	t.Cleanup(func() { conn.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

// envoyNode is the node of an Envoy of version major.minor.
func envoyNode(major, minor uint32) *corev3.Node {
	return &corev3.Node{Id: "envoy-test", Cluster: "test", UserAgentName: "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor}}}}
}

type sdsStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	resps  chan *discoveryv3.DiscoveryResponse
	errs   chan error
}

func openSDS(t *testing.T, c secretv3.SecretDiscoveryServiceClient) *sdsStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	st, err := c.StreamSecrets(ctx)
	if err != nil {
		cancel()
		t.Fatalf("StreamSecrets: %v", err)
	}
	s := &sdsStream{t: t, stream: st, resps: make(chan *discoveryv3.DiscoveryResponse, 16), errs: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := st.Recv()
			if err != nil {
				s.errs <- err
				return
			}
			s.resps <- r
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *sdsStream) send(req *discoveryv3.DiscoveryRequest) {
	s.t.Helper()
	if req.TypeUrl == "" {
		req.TypeUrl = secretType
	}
	mustOK(s.t, s.stream.Send(req), "sending an SDS request")
}

func (s *sdsStream) next(what string) *discoveryv3.DiscoveryResponse {
	s.t.Helper()
	select {
	case r := <-s.resps:
		return r
	case err := <-s.errs:
		s.t.Fatalf("%s: stream ended: %v", what, err)
	case <-time.After(20 * time.Second):
		s.t.Fatalf("%s: no response within 20s", what)
	}
	return nil
}

// failure waits for the stream to end and returns its error.
func (s *sdsStream) failure(what string) error {
	s.t.Helper()
	select {
	case r := <-s.resps:
		s.t.Fatalf("%s: got a response with %d resources, want the stream to fail", what, len(r.Resources))
	case err := <-s.errs:
		return err
	case <-time.After(20 * time.Second):
		s.t.Fatalf("%s: the stream did not end within 20s", what)
	}
	return nil
}

type secrets map[string]*tlsv3.Secret

func decodeSecrets(t *testing.T, r *discoveryv3.DiscoveryResponse) (secrets, []string) {
	t.Helper()
	if r.TypeUrl != secretType {
		t.Errorf("response type_url = %q, want %q", r.TypeUrl, secretType)
	}
	out := secrets{}
	var names []string
	for _, a := range r.Resources {
		if a.TypeUrl != secretType {
			t.Errorf("resource type_url = %q, want %q", a.TypeUrl, secretType)
		}
		var s tlsv3.Secret
		mustOK(t, a.UnmarshalTo(&s), "decoding a secret")
		out[s.Name] = &s
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return out, names
}

func pemCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("PEM block %q, want CERTIFICATE", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		mustOK(t, err, "parsing a certificate")
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM data")
	}
	return out
}

// tlsCert returns a TLS certificate secret's chain and PKCS#8 key DER.
func tlsCert(t *testing.T, s *tlsv3.Secret) ([]*x509.Certificate, []byte) {
	t.Helper()
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %q is not a TLS certificate: %v", s.Name, s)
	}
	b, _ := pem.Decode(tc.PrivateKey.GetInlineBytes())
	if b == nil || b.Type != "PRIVATE KEY" {
		t.Fatalf("secret %q: private key is not a PKCS#8 PEM block", s.Name)
	}
	return pemCerts(t, tc.CertificateChain.GetInlineBytes()), b.Bytes
}

// spiffeValidator returns the trust domains and their roots of a validation
// context that uses Envoy's SPIFFE validator.
func spiffeValidator(t *testing.T, s *tlsv3.Secret) map[string][]*x509.Certificate {
	t.Helper()
	vc := s.GetValidationContext()
	if vc == nil {
		t.Fatalf("secret %q is not a validation context", s.Name)
	}
	cv := vc.GetCustomValidatorConfig()
	if cv == nil || cv.Name != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("secret %q: custom validator %v, want envoy.tls.cert_validator.spiffe", s.Name, cv)
	}
	if vc.TrustedCa != nil {
		t.Errorf("secret %q has both the SPIFFE validator and trusted_ca", s.Name)
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	mustOK(t, cv.TypedConfig.UnmarshalTo(&cfg), "decoding SPIFFECertValidatorConfig")
	out := map[string][]*x509.Certificate{}
	var order []string
	for _, d := range cfg.TrustDomains {
		out[d.Name] = pemCerts(t, d.TrustBundle.GetInlineBytes())
		order = append(order, d.Name)
	}
	if !slices.IsSorted(order) {
		t.Errorf("secret %q: trust domains %v not in name order", s.Name, order)
	}
	return out
}

// verifies checks chain as Envoy's SPIFFE validator does: with the roots
// of the trust domain of its leaf's SPIFFE ID, and only those.
func verifies(roots map[string][]*x509.Certificate, chain []*x509.Certificate) error {
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return err
	}
	set := x509bundle.NewSet()
	for name, certs := range roots {
		set.Add(x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(name), certs))
	}
	got, _, err := x509svid.Verify(chain, set)
	if err == nil && got != id {
		return fmt.Errorf("verified %v, want %v", got, id)
	}
	return err
}

// testCA is a CA of some trust domain that issues X509-SVIDs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, td spiffeid.TrustDomain) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: td.Name() + " root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	mustOK(t, err, "test CA")
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) svid(t *testing.T, id spiffeid.ID) []*x509.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(12), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	mustOK(t, err, "test SVID")
	c, _ := x509.ParseCertificate(der)
	return []*x509.Certificate{c}
}

func setFederated(t *testing.T, srv *testServer, partner spiffeid.TrustDomain, roots ...*x509.Certificate) {
	b := &types.Bundle{TrustDomain: partner.Name()}
	for _, c := range roots {
		b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: c.Raw})
	}
	resp, err := bundlev1.NewBundleClient(srv.admin).BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{b}})
	mustOK(t, err, "BatchSetFederatedBundle")
	if st := resp.Results[0].Status; st.Code != 0 {
		t.Fatalf("BatchSetFederatedBundle: %v", st)
	}
}

// TestSDSServesTheWorkloadsSecrets: Envoy's SDS on the Workload API socket,
// without the Workload API's header, gives the caller the X509-SVID and key
// FetchX509SVID gives it (by SPIFFE ID and as "default"), and validation
// contexts (its trust domain's, ROOTCA, a federated one's, ALL) with Envoy's
// SPIFFE validator that verify peers of those trust domains and no other.
func TestSDSServesTheWorkloadsSecrets(t *testing.T) {
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	partnerCA := newTestCA(t, partner)
	srv := startServer(t, nil)
	setFederated(t, srv, partner, partnerCA.cert)
	token := srv.token()
	web := spiffeid.RequireFromPath(td, "/web")
	srv.createEntry(&types.Entry{ParentId: protoID(agentPath(token)), SpiffeId: protoID(web),
		Selectors: []*types.Selector{{Type: "test", Value: "id:web"}}, FederatesWith: []string{partner.Name()}})
	att := newPIDAttestor()
	att.set(os.Getpid(), "web")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)

	svid, err := workloadapi.FetchX509SVID(ctxT(t), workloadapi.WithAddr(socketAddr(cfg)))
	mustOK(t, err, "FetchX509SVID")
	wantKey, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	mustOK(t, err, "PKCS#8 of the Workload API's key")

	c := sdsClient(t, cfg)
	names := []string{web.String(), "default", "spiffe://example.org", "ROOTCA", "spiffe://partner.test", "ALL"}
	st := openSDS(t, c)
	st.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), ResourceNames: names})
	resp := st.next("first response")
	if resp.VersionInfo != "1" || resp.Nonce == "" {
		t.Errorf("first response: version %q nonce %q, want version 1 and a nonce", resp.VersionInfo, resp.Nonce)
	}
	got, gotNames := decodeSecrets(t, resp)
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(gotNames, want) {
		t.Fatalf("secrets %v, want %v", gotNames, want)
	}
	for _, name := range []string{web.String(), "default"} {
		chain, key := tlsCert(t, got[name])
		if len(chain) != len(svid.Certificates) {
			t.Fatalf("%s: chain of %d certificates, the Workload API gives %d", name, len(chain), len(svid.Certificates))
		}
		for i := range chain {
			if !chain[i].Equal(svid.Certificates[i]) {
				t.Errorf("%s: certificate %d differs from the Workload API's", name, i)
			}
		}
		if !bytes.Equal(key, wantKey) {
			t.Errorf("%s: private key differs from the Workload API's", name)
		}
	}
	ownPeer := svid.Certificates
	foreign := newTestCA(t, td).svid(t, spiffeid.RequireFromPath(td, "/impostor"))
	partnerPeer := partnerCA.svid(t, spiffeid.RequireFromPath(partner, "/api"))
	partnerClaimingOwn := partnerCA.svid(t, spiffeid.RequireFromPath(td, "/web"))
	for _, tc := range []struct {
		name           string
		tds            []string
		accept, refuse [][]*x509.Certificate
	}{
		{"spiffe://example.org", []string{"example.org"}, [][]*x509.Certificate{ownPeer}, [][]*x509.Certificate{foreign, partnerPeer}},
		{"ROOTCA", []string{"example.org"}, [][]*x509.Certificate{ownPeer}, [][]*x509.Certificate{foreign, partnerPeer}},
		{"spiffe://partner.test", []string{"partner.test"}, [][]*x509.Certificate{partnerPeer}, [][]*x509.Certificate{ownPeer, partnerClaimingOwn}},
		{"ALL", []string{"example.org", "partner.test"}, [][]*x509.Certificate{ownPeer, partnerPeer}, [][]*x509.Certificate{foreign, partnerClaimingOwn}},
	} {
		roots := spiffeValidator(t, got[tc.name])
		var tds []string
		for name := range roots {
			tds = append(tds, name)
		}
		slices.Sort(tds)
		if !slices.Equal(tds, tc.tds) {
			t.Errorf("%s: trust domains %v, want %v", tc.name, tds, tc.tds)
		}
		for _, p := range tc.accept {
			if err := verifies(roots, p); err != nil {
				t.Errorf("%s does not verify %v: %v", tc.name, p[0].URIs, err)
			}
		}
		for _, p := range tc.refuse {
			if err := verifies(roots, p); err == nil {
				t.Errorf("%s verifies %v issued by %s, want a refusal", tc.name, p[0].URIs, p[0].Issuer)
			}
		}
	}

	// No names: every bundle under its trust domain ID and every SVID
	// under its SPIFFE ID, over the stream and FetchSecrets alike.
	all := openSDS(t, c)
	all.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30)})
	fetched, err := c.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), TypeUrl: secretType})
	mustOK(t, err, "FetchSecrets")
	for what, r := range map[string]*discoveryv3.DiscoveryResponse{"stream": all.next("response to no names"), "FetchSecrets": fetched} {
		_, gotNames := decodeSecrets(t, r)
		if want := []string{"spiffe://example.org", "spiffe://example.org/web", "spiffe://partner.test"}; !slices.Equal(gotNames, want) {
			t.Errorf("%s with no names: %v, want %v", what, gotNames, want)
		}
	}
	if fetched.VersionInfo != "" || fetched.Nonce != "" {
		t.Errorf("FetchSecrets: version %q nonce %q, want neither (as spire-agent)", fetched.VersionInfo, fetched.Nonce)
	}
}

// TestSDSPushesRotationAndBundleChanges: with a 4s X509-SVID an open
// stream gets the renewed certificate before the old one expires, each
// push a new version and nonce, and a root appended to the bundle reaches
// the validation context stream.
func TestSDSPushesRotationAndBundleChanges(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 4)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)
	c := sdsClient(t, cfg)

	certs := openSDS(t, c)
	certs.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), ResourceNames: []string{"default"}})
	bundles := openSDS(t, c)
	bundles.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), ResourceNames: []string{"ROOTCA"}})

	r := certs.next("first certificate")
	got, _ := decodeSecrets(t, r)
	chain, _ := tlsCert(t, got["default"])
	first := chain[0]
	if left := time.Until(first.NotAfter); left > 5*time.Second {
		t.Fatalf("SVID expires in %v, want about 4s", left)
	}
	versions := []string{r.VersionInfo}
	nonces := []string{r.Nonce}
	certs.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
	r = certs.next("renewed certificate")
	got, _ = decodeSecrets(t, r)
	chain, _ = tlsCert(t, got["default"])
	versions, nonces = append(versions, r.VersionInfo), append(nonces, r.Nonce)
	if chain[0].SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("the second push holds the same certificate (serial %v): an unchanged secret was sent again", first.SerialNumber)
	}
	if !time.Now().Before(first.NotAfter) {
		t.Errorf("renewed certificate arrived at %v, after the old one expired at %v", time.Now(), first.NotAfter)
	}
	if versions[0] != "1" || versions[1] != "2" || nonces[0] == nonces[1] {
		t.Errorf("versions %v nonces %v, want 1 then 2 with two different nonces", versions, nonces)
	}

	br := bundles.next("first bundle")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "new root"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	mustOK(t, err, "new root")
	bundles.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}, VersionInfo: br.VersionInfo, ResponseNonce: br.Nonce})
	_, err = bundlev1.NewBundleClient(srv.admin).AppendBundle(ctxT(t), &bundlev1.AppendBundleRequest{
		X509Authorities: []*types.X509Certificate{{Asn1: der}},
	})
	mustOK(t, err, "AppendBundle")
	br = bundles.next("bundle with the new root")
	got, _ = decodeSecrets(t, br)
	if !hasCert(spiffeValidator(t, got["ROOTCA"])["example.org"], der) {
		t.Error("the validation context pushed after AppendBundle lacks the new root")
	}
	if br.VersionInfo != "2" {
		t.Errorf("bundle push version %q, want 2", br.VersionInfo)
	}
}

// TestSDSNoncesAndAcks: an ACK and a NACK of the last response send
// nothing (the NACK is logged), a request with a stale nonce is ignored
// even when it asks for other names, and a request with the last nonce
// and other names is answered at once. Each check holds because the next
// response must be the one answering the last valid request; the agent's
// arbor_agent_sds_responses_total counts the three sent.
func TestSDSNoncesAndAcks(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	cfg.HealthAddr = freeAddr(t)
	runAgent(t, cfg)
	st := openSDS(t, sdsClient(t, cfg))

	st.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), ResourceNames: []string{"default"}})
	r1 := st.next("first response")
	// ACK, then NACK of the same response: nothing is sent.
	st.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce})
	st.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, ResponseNonce: r1.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "bad certificate"}})
	// A stale nonce asking for another name: ignored.
	st.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org"}, VersionInfo: r1.VersionInfo, ResponseNonce: "stale"})
	// The last nonce with other names: answered.
	st.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce})
	r2 := st.next("response to ROOTCA")
	if _, names := decodeSecrets(t, r2); !slices.Equal(names, []string{"ROOTCA"}) {
		t.Fatalf("after ACK, NACK, a stale request and ROOTCA: got %v, want [ROOTCA] (an ACK, NACK or stale request was answered)", names)
	}
	if r2.VersionInfo != "2" || r2.Nonce == r1.Nonce {
		t.Errorf("second response version %q nonce %q, want version 2 and a new nonce", r2.VersionInfo, r2.Nonce)
	}
	// The stream goes on: the first nonce is stale now, the second is not.
	st.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, VersionInfo: r2.VersionInfo, ResponseNonce: r1.Nonce})
	st.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default", "ROOTCA"}, VersionInfo: r2.VersionInfo, ResponseNonce: r2.Nonce})
	r3 := st.next("response to default and ROOTCA")
	if _, names := decodeSecrets(t, r3); !slices.Equal(names, []string{"ROOTCA", "default"}) {
		t.Fatalf("got %v, want [ROOTCA default]", names)
	}
	// Three responses were sent, and counted.
	poll(t, 10*time.Second, "arbor_agent_sds_responses_total 3", func() error {
		return metricIs(cfg.HealthAddr, "arbor_agent_sds_responses_total", "3")
	})
}

// TestSDSRefusals: a name the workload may not have fails the stream and
// FetchSecrets with spire-agent's InvalidArgument; a caller with no entry
// gets no certificate (only its trust domain's public bundle, as from
// spire-agent); a wrong type_url is refused; DeltaSecrets is Unimplemented.
func TestSDSRefusals(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	srv.workloadEntry(agentPath(token), "a", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)
	c := sdsClient(t, cfg)

	wantCode := func(what string, err error, code codes.Code, msg string) {
		t.Helper()
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("%s: %v, want %v with %q", what, err, code, msg)
		}
	}
	const notAuthorized = `workload is not authorized for the requested identities ["spiffe://example.org/other"]`
	st := openSDS(t, c)
	st.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), ResourceNames: []string{"spiffe://example.org/other", "default"}})
	wantCode("stream for an unknown name", st.failure("unknown name"), codes.InvalidArgument, notAuthorized)
	_, err := c.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org/other"}})
	wantCode("FetchSecrets of an unknown name", err, codes.InvalidArgument, notAuthorized)
	_, err = c.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
	wantCode("FetchSecrets of clusters", err, codes.InvalidArgument, "is not SDS's")
	st = openSDS(t, c)
	st.send(&discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", ResourceNames: []string{"default"}})
	wantCode("stream of clusters", st.failure("wrong type"), codes.InvalidArgument, "is not SDS's")
	delta, err := c.DeltaSecrets(ctxT(t))
	if err == nil {
		_, err = delta.Recv()
	}
	wantCode("DeltaSecrets", err, codes.Unimplemented, "StreamSecrets")

	// A second agent whose attestor knows no selectors for this process.
	token2 := srv.token()
	srv.workloadEntry(agentPath(token2), "b", 0)
	cfg2 := srv.agentConfig(t, token2, newPIDAttestor())
	runAgent(t, cfg2)
	c2 := sdsClient(t, cfg2)
	for _, name := range []string{"default", "spiffe://example.org/b"} {
		st := openSDS(t, c2)
		st.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30), ResourceNames: []string{name}})
		wantCode("no entry, "+name, st.failure(name), codes.InvalidArgument, "workload is not authorized for the requested identities")
	}
	st = openSDS(t, c2)
	st.send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30)})
	got, names := decodeSecrets(t, st.next("no entry, no names"))
	if !slices.Equal(names, []string{"spiffe://example.org"}) || got["spiffe://example.org"].GetValidationContext() == nil {
		t.Errorf("no entry, no names: %v, want only the trust domain's validation context", names)
	}
	r, err := c2.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}})
	mustOK(t, err, "no entry, FetchSecrets ROOTCA")
	if _, names := decodeSecrets(t, r); !slices.Equal(names, []string{"ROOTCA"}) {
		t.Errorf("no entry, FetchSecrets ROOTCA: %v", names)
	}
}

// TestSDSValidatorChoice: trusted_ca instead of the SPIFFE validator for an
// Envoy older than 1.18, with disable_spiffe_cert_validation in the config
// or in the node's metadata (which wins either way); ALL needs the SPIFFE
// validator. Custom names replace SPIRE's, and a disabled SDS is
// Unimplemented while the Workload API goes on.
func TestSDSValidatorChoice(t *testing.T) {
	srv := startServer(t, nil)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	run := func(sds agent.SDSConfig) (secretv3.SecretDiscoveryServiceClient, agent.Config) {
		token := srv.token()
		srv.workloadEntry(agentPath(token), "a", 0)
		cfg := srv.agentConfig(t, token, att)
		cfg.SDS = sds
		runAgent(t, cfg)
		return sdsClient(t, cfg), cfg
	}
	meta := func(n *corev3.Node, v *structpb.Value) *corev3.Node {
		n.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{"disable_spiffe_cert_validation": v}}
		return n
	}
	plain, _ := run(agent.SDSConfig{})
	disabled, _ := run(agent.SDSConfig{DisableSPIFFECertValidation: true})
	for _, tc := range []struct {
		what       string
		c          secretv3.SecretDiscoveryServiceClient
		node       *corev3.Node
		wantSPIFFE bool
	}{
		{"Envoy 1.30", plain, envoyNode(1, 30), true},
		{"Envoy 2.0", plain, envoyNode(2, 0), true},
		{"Envoy without a version", plain, &corev3.Node{Id: "x"}, true},
		{"no node", plain, nil, true},
		{"Envoy 1.17", plain, envoyNode(1, 17), false},
		{"metadata true", plain, meta(envoyNode(1, 30), structpb.NewBoolValue(true)), false},
		{"metadata \"true\"", plain, meta(envoyNode(1, 30), structpb.NewStringValue("true")), false},
		{"metadata \"maybe\"", plain, meta(envoyNode(1, 30), structpb.NewStringValue("maybe")), true},
		{"config", disabled, envoyNode(1, 30), false},
		{"config, metadata false", disabled, meta(envoyNode(1, 30), structpb.NewBoolValue(false)), true},
		{"config, metadata 5", disabled, meta(envoyNode(1, 30), structpb.NewNumberValue(5)), false},
	} {
		r, err := tc.c.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{Node: tc.node, ResourceNames: []string{"ROOTCA"}})
		mustOK(t, err, "%s: FetchSecrets", tc.what)
		got, _ := decodeSecrets(t, r)
		vc := got["ROOTCA"].GetValidationContext()
		switch {
		case tc.wantSPIFFE && vc.GetCustomValidatorConfig().GetName() != "envoy.tls.cert_validator.spiffe":
			t.Errorf("%s: validation context %v, want the SPIFFE validator", tc.what, vc)
		case !tc.wantSPIFFE:
			if vc.GetCustomValidatorConfig() != nil || len(vc.GetTrustedCa().GetInlineBytes()) == 0 {
				t.Errorf("%s: validation context %v, want trusted_ca only", tc.what, vc)
				continue
			}
			roots := pemCerts(t, vc.GetTrustedCa().GetInlineBytes())
			if !slices.EqualFunc(roots, srv.roots, func(a, b *x509.Certificate) bool { return a.Equal(b) }) {
				t.Errorf("%s: trusted_ca holds %d certificates, not the server's %d roots", tc.what, len(roots), len(srv.roots))
			}
		}
		if !tc.wantSPIFFE {
			_, err := tc.c.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{Node: tc.node, ResourceNames: []string{"ALL"}})
			if status.Code(err) != codes.FailedPrecondition {
				t.Errorf("%s: ALL without the SPIFFE validator: %v, want FailedPrecondition", tc.what, err)
			}
		}
	}

	named, _ := run(agent.SDSConfig{DefaultSVIDName: "svid", DefaultBundleName: "bundle", DefaultAllBundlesName: "every"})
	r, err := named.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"svid", "bundle", "every"}})
	mustOK(t, err, "custom names")
	got, names := decodeSecrets(t, r)
	if !slices.Equal(names, []string{"bundle", "every", "svid"}) || got["svid"].GetTlsCertificate() == nil {
		t.Errorf("custom names: %v", names)
	}
	for _, old := range []string{"default", "ROOTCA", "ALL"} {
		_, err := named.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{ResourceNames: []string{old}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("custom names, %s: %v, want InvalidArgument", old, err)
		}
	}

	off, offCfg := run(agent.SDSConfig{Disabled: true})
	_, err = off.FetchSecrets(ctxT(t), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("disabled SDS: %v, want Unimplemented", err)
	}
	if _, err := workloadapi.FetchX509SVID(ctxT(t), workloadapi.WithAddr(socketAddr(offCfg))); err != nil {
		t.Errorf("disabled SDS: the Workload API fails: %v", err)
	}
}

// TestSDSConfigRefusals: names that collide or could name an SVID are
// refused before anything starts.
func TestSDSConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		sds  agent.SDSConfig
		want string
	}{
		{agent.SDSConfig{DefaultBundleName: "ALL"}, `default_bundle_name and default_all_bundles_name are both "ALL"`},
		{agent.SDSConfig{DefaultSVIDName: "ROOTCA"}, `default_svid_name and default_bundle_name are both "ROOTCA"`},
		{agent.SDSConfig{DefaultAllBundlesName: "spiffe://example.org"}, `default_all_bundles_name "spiffe://example.org" starts with spiffe://`},
	} {
		cfg := agent.Config{TrustDomain: td, ServerAddress: "127.0.0.1:1", DataDir: "d", SocketPath: "s", SDS: tc.sds}
		_, err := agent.New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent.New with %+v: %v, want an error with %q", tc.sds, err, tc.want)
		}
	}
}
