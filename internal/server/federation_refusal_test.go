package server_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/federation"
	"github.com/arborid/arbor/internal/server"
)

var (
	partnerTD       = spiffeid.RequireTrustDomainFromString("partner.test")
	partnerServerID = spiffeid.RequireFromPath(partnerTD, "/spire/server")
)

// TestRefusedBundlesKeepThePreviousOne: a root holding an https_spiffe
// relationship with partner.test fetches its bundle on demand (RefreshBundle);
// then every answer a careful client refuses — an endpoint with another
// SPIFFE ID, a certificate of a CA the held bundle lacks, another trust
// domain's bundle, an oversize document, a redirect, malformed JSON — is
// FailedPrecondition, keeps the held bundle byte for byte and counts one
// error in arbor_federation_refreshes_total; an endpoint not reached is
// Unavailable, and counted the same way.
func TestRefusedBundlesKeepThePreviousOne(t *testing.T) {
	pki := newPartnerPKI(t)
	// A refresh hint of an hour keeps the root's own refresher, which
	// fetches once when it sees the relationship, out of the way.
	doc := pki.document(t, time.Hour, "k1")
	// Another valid bundle of partner: every refusal below that could be
	// mistaken for an answer serves it, so accepting it would show.
	changed := pki.document(t, time.Hour, "k1", "k2")
	ep := startForeignEndpoint(t, pki.svid(t, pki.ca, partnerServerID), serveDocument(doc))
	redirectTarget := startForeignEndpoint(t, pki.svid(t, pki.ca, partnerServerID), serveDocument(changed))

	root := startServer(t, func(c *server.Config) { c.HealthAddr = "127.0.0.1:0" })
	createPartnerRelationship(t, root, ep.URL, pki.ca.cert)
	refresh := func() error {
		_, err := trustdomainv1.NewTrustDomainClient(root.admin).RefreshBundle(ctxT(t), &trustdomainv1.RefreshBundleRequest{TrustDomain: partnerTD.Name()})
		return err
	}
	if err := refresh(); err != nil {
		t.Fatalf("RefreshBundle(valid endpoint) = %v", err)
	}
	held := heldBundle(t, root)
	if len(held.JwtAuthorities) != 1 || held.JwtAuthorities[0].KeyId != "k1" {
		t.Fatalf("after RefreshBundle the held bundle has JWT keys %v, want the served k1", held.JwtAuthorities)
	}
	waitFor(t, "two good fetches counted: RefreshBundle's and the refresher's first", func() bool {
		return federationRefreshes(t, root, "ok") == 2
	})

	// Following the redirect would have changed the bundle.
	trust := x509bundle.FromX509Authorities(partnerTD, []*x509.Certificate{pki.ca.cert})
	got, err := federation.Fetch(ctxT(t), federation.Endpoint{TrustDomain: partnerTD, URL: redirectTarget.URL,
		Profile: federation.ProfileHTTPSSPIFFE, ID: partnerServerID}, trust, nil)
	if err != nil || len(got.JWTAuthorities()) != 2 {
		t.Fatalf("Fetch(redirect target) = %v, %v; want its two JWT keys", got, err)
	}

	stranger := newTestCA(t, "stranger CA", partnerTD.ID().URL())
	otherTD := spiffeid.RequireTrustDomainFromString("other.test")
	otherCA := newTestCA(t, "other CA", otherTD.ID().URL())
	otherDoc := spiffebundle.New(partnerTD)
	otherDoc.AddX509Authority(otherCA.cert)
	otherDoc.AddJWTAuthority("k1", pki.jwtKey.Public())
	otherDocJSON := must(otherDoc.Marshal())(t)

	type refusal struct {
		name string
		cert tls.Certificate // presented by the endpoint
		// handler answers the fetch; nil closes the endpoint.
		handler http.HandlerFunc
		want    codes.Code
	}
	refusals := []refusal{
		{"endpoint with another SPIFFE ID", pki.svid(t, pki.ca, spiffeid.RequireFromPath(partnerTD, "/somebody/else")), serveDocument(changed), codes.FailedPrecondition},
		{"certificate of a CA not in the held bundle", pki.svid(t, stranger, partnerServerID), serveDocument(changed), codes.FailedPrecondition},
		{"bundle of another trust domain", pki.svid(t, pki.ca, partnerServerID), serveDocument(otherDocJSON), codes.FailedPrecondition},
		{"document over 4 MiB", pki.svid(t, pki.ca, partnerServerID), func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":[`))
			w.Write(bytes.Repeat([]byte(" "), federation.MaxBundleSize))
			w.Write([]byte(`]}`))
		}, codes.FailedPrecondition},
		{"redirect", pki.svid(t, pki.ca, partnerServerID), func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTarget.URL, http.StatusFound)
		}, codes.FailedPrecondition},
		{"malformed JSON", pki.svid(t, pki.ca, partnerServerID), serveDocument([]byte(`{"keys": [`)), codes.FailedPrecondition},
	}
	// Not reached is not refused: Unavailable, and otherwise the same.
	refusals = append(refusals, refusal{"endpoint not reached", tls.Certificate{}, nil, codes.Unavailable})
	for _, r := range refusals {
		prev := heldBundle(t, root)
		errorsBefore := federationRefreshes(t, root, "error")
		if r.handler == nil {
			ep.Close()
		} else {
			ep.set(r.cert, r.handler)
		}
		err := refresh()
		if got := status.Code(err); got != r.want {
			t.Errorf("%s: RefreshBundle = %v, want %v", r.name, err, r.want)
		}
		if after := heldBundle(t, root); !bytes.Equal(marshalBundle(t, after), marshalBundle(t, prev)) {
			t.Errorf("%s: the held bundle changed from %s to %s, want it kept", r.name, describeBundle(prev), describeBundle(after))
		}
		if n := federationRefreshes(t, root, "error"); n != errorsBefore+1 {
			t.Errorf("%s: arbor_federation_refreshes_total{result=\"error\"} went from %v to %v, want one more", r.name, errorsBefore, n)
		}
		t.Logf("%s: %v", r.name, err)
	}
	if n := federationRefreshes(t, root, "ok"); n != 2 {
		t.Errorf("arbor_federation_refreshes_total{result=\"ok\"} = %v, want still 2", n)
	}
}

// TestRefresherKeepsThePreviousBundleOnRefusal: the root's own refresher,
// given another trust domain's bundle by partner's endpoint, counts the
// error, keeps the bundle it held and takes the endpoint's next good one.
func TestRefresherKeepsThePreviousBundleOnRefusal(t *testing.T) {
	pki := newPartnerPKI(t)
	doc := pki.document(t, time.Second, "k1")
	ep := startForeignEndpoint(t, pki.svid(t, pki.ca, partnerServerID), serveDocument(doc))
	root := startServer(t, func(c *server.Config) {
		c.HealthAddr = "127.0.0.1:0"
		c.FederationRefreshFloor = 200 * time.Millisecond
	})
	createPartnerRelationship(t, root, ep.URL, pki.ca.cert)
	waitFor(t, "the refresher fetching partner's bundle with its JWT key", func() bool {
		return len(heldBundle(t, root).JwtAuthorities) == 1
	})
	prev := heldBundle(t, root)

	otherCA := newTestCA(t, "other CA", spiffeid.RequireTrustDomainFromString("other.test").ID().URL())
	otherDoc := spiffebundle.New(partnerTD)
	otherDoc.AddX509Authority(otherCA.cert)
	otherDoc.SetRefreshHint(time.Second)
	errorsBefore := federationRefreshes(t, root, "error")
	ep.set(pki.svid(t, pki.ca, partnerServerID), serveDocument(must(otherDoc.Marshal())(t)))
	waitFor(t, "the refresher refusing another trust domain's bundle", func() bool {
		return federationRefreshes(t, root, "error") > errorsBefore
	})
	if after := heldBundle(t, root); !bytes.Equal(marshalBundle(t, after), marshalBundle(t, prev)) {
		t.Fatalf("after the refresher's refusal the held bundle is %s, want the previous %s", describeBundle(after), describeBundle(prev))
	}

	ep.set(pki.svid(t, pki.ca, partnerServerID), serveDocument(pki.document(t, time.Second, "k1", "k2")))
	waitFor(t, "the refresher taking the endpoint's next good bundle (after its 5s retry)", func() bool {
		return len(heldBundle(t, root).JwtAuthorities) == 2
	})
}

// partnerPKI is partner.test's CA (with the trust domain's ID as its URI
// SAN, as SPIRE's CAs have) and JWT keys.
type partnerPKI struct {
	ca     testCA
	jwtKey *ecdsa.PrivateKey
	jwt2   *ecdsa.PrivateKey
}

func newPartnerPKI(t *testing.T) partnerPKI {
	return partnerPKI{ca: newTestCA(t, "partner CA", partnerTD.ID().URL()), jwtKey: newKey(t), jwt2: newKey(t)}
}

// document is partner's SPIFFE bundle: its CA and the JWT keys named (k1,
// k2), with refresh hint hint.
func (p partnerPKI) document(t *testing.T, hint time.Duration, kids ...string) []byte {
	t.Helper()
	b := spiffebundle.New(partnerTD)
	b.AddX509Authority(p.ca.cert)
	keys := map[string]*ecdsa.PrivateKey{"k1": p.jwtKey, "k2": p.jwt2}
	for _, kid := range kids {
		if err := b.AddJWTAuthority(kid, keys[kid].Public()); err != nil {
			t.Fatal(err)
		}
	}
	b.SetRefreshHint(hint)
	return must(b.Marshal())(t)
}

// svid is an X509-SVID for id signed by ca, for a TLS server on 127.0.0.1.
func (partnerPKI) svid(t *testing.T, ca testCA, id spiffeid.ID) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{id.URL()}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key))(t)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// newTestCA is a self-signed CA named cn with uris as its URI SANs.
func newTestCA(t *testing.T, cn string, uris ...*url.URL) testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: uris}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))(t)
	return testCA{cert: must(x509.ParseCertificate(der))(t), key: key}
}

// foreignEndpoint is a bundle endpoint of partner.test under the test's
// control: the certificate it presents and what it answers are switched with
// set, and take effect from the next connection (federation.Fetch opens one
// per fetch).
type foreignEndpoint struct {
	*httptest.Server
	mu      sync.Mutex
	cert    tls.Certificate
	handler http.HandlerFunc
}

func startForeignEndpoint(t *testing.T, cert tls.Certificate, h http.HandlerFunc) *foreignEndpoint {
	t.Helper()
	e := &foreignEndpoint{cert: cert, handler: h}
	e.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		h := e.handler
		e.mu.Unlock()
		h(w, r)
	}))
	// GetConfigForClient rather than GetCertificate: the TLS server asks
	// GetCertificate only when a client sends a server name, which one
	// dialing 127.0.0.1 does not.
	e.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return &tls.Config{Certificates: []tls.Certificate{e.cert}}, nil
	}}
	e.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
	e.StartTLS()
	t.Cleanup(e.Close)
	return e
}

func (e *foreignEndpoint) set(cert tls.Certificate, h http.HandlerFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cert, e.handler = cert, h
}

func serveDocument(doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { w.Write(doc) }
}

// createPartnerRelationship creates h's https_spiffe relationship with
// partner's endpoint at url, with ca as partner's initial bundle.
func createPartnerRelationship(t *testing.T, h *harness, url string, ca *x509.Certificate) {
	t.Helper()
	resp, err := trustdomainv1.NewTrustDomainClient(h.admin).BatchCreateFederationRelationship(ctxT(t), &trustdomainv1.BatchCreateFederationRelationshipRequest{
		FederationRelationships: []*types.FederationRelationship{{
			TrustDomain:           partnerTD.Name(),
			BundleEndpointUrl:     url,
			BundleEndpointProfile: &types.FederationRelationship_HttpsSpiffe{HttpsSpiffe: &types.HTTPSSPIFFEProfile{EndpointSpiffeId: partnerServerID.String()}},
			TrustDomainBundle:     &types.Bundle{TrustDomain: partnerTD.Name(), X509Authorities: []*types.X509Certificate{{Asn1: ca.Raw}}},
		}},
	})
	if err != nil || resp.Results[0].Status.Code != 0 {
		t.Fatalf("BatchCreateFederationRelationship: %v %v", err, resp.GetResults())
	}
}

// heldBundle is the bundle of partner.test that h holds.
func heldBundle(t *testing.T, h *harness) *types.Bundle {
	t.Helper()
	return must(bundlev1.NewBundleClient(h.admin).GetFederatedBundle(ctxT(t), &bundlev1.GetFederatedBundleRequest{TrustDomain: partnerTD.Name()}))(t)
}

func marshalBundle(t *testing.T, b *types.Bundle) []byte {
	t.Helper()
	return must(proto.MarshalOptions{Deterministic: true}.Marshal(b))(t)
}

// describeBundle says what a failure needs to know of b: its authorities.
func describeBundle(b *types.Bundle) string {
	var cas, kids []string
	for _, a := range b.X509Authorities {
		if c, err := x509.ParseCertificate(a.Asn1); err == nil {
			cas = append(cas, c.Subject.CommonName)
		}
	}
	for _, k := range b.JwtAuthorities {
		kids = append(kids, k.KeyId)
	}
	return fmt.Sprintf("{X.509 %v, JWT %v, sequence %d}", cas, kids, b.SequenceNumber)
}

// federationRefreshes reads arbor_federation_refreshes_total of partner.test
// with result from h's /metrics; a series not there yet is zero.
func federationRefreshes(t *testing.T, h *harness, result string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + h.srv.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body := must(io.ReadAll(resp.Body))(t)
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "arbor_federation_refreshes_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		pairs := strings.Split(labels, ",")
		if ok && slices.Contains(pairs, `trust_domain="`+partnerTD.Name()+`"`) && slices.Contains(pairs, `result="`+result+`"`) {
			return must(strconv.ParseFloat(value, 64))(t)
		}
	}
	return 0
}
