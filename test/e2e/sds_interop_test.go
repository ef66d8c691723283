package e2e

import (
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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

const sdsSecretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sdsAnswer is an SDS answer reduced to what Envoy acts on: the status, and
// per secret its name and kind ("tls <SPIFFE ID of the leaf>", "spiffe
// <trust domains>", "trusted_ca <n roots>").
type sdsAnswer struct {
	code    codes.Code
	msg     string
	secrets []string
}

func (a sdsAnswer) String() string {
	if a.code != codes.OK {
		return fmt.Sprintf("%v %q", a.code, a.msg)
	}
	return strings.Join(a.secrets, "; ")
}

func reduceSDS(t *testing.T, resp *discoveryv3.DiscoveryResponse, err error) sdsAnswer {
	t.Helper()
	if err != nil {
		st := status.Convert(err)
		return sdsAnswer{code: st.Code(), msg: st.Message()}
	}
	var out sdsAnswer
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatalf("decoding a secret: %v", err)
		}
		desc := s.Name + ": "
		switch {
		case s.GetTlsCertificate() != nil:
			b, _ := pem.Decode(s.GetTlsCertificate().CertificateChain.GetInlineBytes())
			if b == nil {
				t.Fatalf("secret %s: no PEM chain", s.Name)
			}
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil || len(leaf.URIs) != 1 {
				t.Fatalf("secret %s: bad leaf: %v", s.Name, err)
			}
			key, _ := pem.Decode(s.GetTlsCertificate().PrivateKey.GetInlineBytes())
			if key == nil || key.Type != "PRIVATE KEY" {
				t.Fatalf("secret %s: key is not a PKCS#8 PEM block", s.Name)
			}
			desc += "tls " + leaf.URIs[0].String()
		case s.GetValidationContext().GetCustomValidatorConfig() != nil:
			cv := s.GetValidationContext().GetCustomValidatorConfig()
			var cfg tlsv3.SPIFFECertValidatorConfig
			if err := cv.TypedConfig.UnmarshalTo(&cfg); err != nil {
				t.Fatalf("secret %s: %v", s.Name, err)
			}
			var tds []string
			for _, d := range cfg.TrustDomains {
				tds = append(tds, d.Name)
			}
			desc += cv.Name + " " + strings.Join(tds, ",")
		case s.GetValidationContext().GetTrustedCa() != nil:
			desc += "trusted_ca " + strconv.Itoa(strings.Count(string(s.GetValidationContext().GetTrustedCa().GetInlineBytes()), "BEGIN CERTIFICATE")) + " roots"
		default:
			desc += "unknown secret type"
		}
		out.secrets = append(out.secrets, desc)
	}
	slices.Sort(out.secrets)
	return out
}

func sdsNode(major, minor uint32, meta map[string]*structpb.Value) *corev3.Node {
	n := &corev3.Node{Id: "e2e", Cluster: "e2e", UserAgentName: "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor}}}}
	if meta != nil {
		n.Metadata = &structpb.Struct{Fields: meta}
	}
	return n
}

// TestSDSAsSpireAgent: Envoy's SDS on an arbor agent answers as on a real
// spire-agent, both attested to one arbor server with an entry of the same
// SPIFFE ID for this process: the same secrets (names, TLS certificates of
// that ID, SPIFFE validator or trusted_ca, its own and a federated trust
// domain's bundles) and the same
// refusals, over FetchSecrets and over a stream's first response (version
// "1" and a nonce), and an ACK answered by neither. The one difference is
// ALL for an Envoy older than 1.18: both refuse it, spire-agent with
// Internal, arbor with FailedPrecondition. Against every SPIRE release in
// spirePeers.
func TestSDSAsSpireAgent(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	forEachSpire(t, testSDSAsSpireAgent)
}

func testSDSAsSpireAgent(t *testing.T, p *spirePeer) {
	a := newArbor(t, `datastore "sqlite" {}`)
	a.spire = p
	a.start(t)
	_, bundlePEM := a.bundlePEM(t)
	web := mustID(t, "/web")
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	spireHost, arborHost := mustID(t, "/host/spire"), mustID(t, "/host/arbor")
	spireTok, arborTok := a.generateToken(t, spireHost), a.generateToken(t, arborHost)
	// A partner trust domain the entries federate with, its root a
	// throwaway self-signed CA.
	partnerCA := sdsPartnerRoot(t)
	partnerPath := filepath.Join(t.TempDir(), "partner.pem")
	if err := os.WriteFile(partnerPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: partnerCA.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	a.cli(t, "bundle", "set", "-format", "pem", "-id", "spiffe://partner.test", "-path", partnerPath)
	for _, host := range []spiffeid.ID{spireHost, arborHost} {
		a.cli(t, "entry", "create", "-parentID", host.String(), "-spiffeID", web.String(), "-selector", uid, "-federatesWith", "spiffe://partner.test")
	}
	spireAg := startAgent(t, a, spireTok)
	arborAg := startArborAgent(t, a.addr(), bundlePEM, arborTok)

	client := func(socket string) secretv3.SecretDiscoveryServiceClient {
		conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return secretv3.NewSecretDiscoveryServiceClient(conn)
	}
	agents := []struct {
		name string
		c    secretv3.SecretDiscoveryServiceClient
	}{{"spire-agent", client(spireAg.socket)}, {"arbor", client(arborAg.socket)}}
	for _, ag := range agents {
		poll(t, waitTimeout, ag.name+" serving the default SVID over SDS", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := ag.c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: sdsNode(1, 30, nil), TypeUrl: sdsSecretType, ResourceNames: []string{"default"}})
			return err
		})
	}

	disable := map[string]*structpb.Value{"disable_spiffe_cert_validation": structpb.NewBoolValue(true)}
	cases := []struct {
		what  string
		node  *corev3.Node
		names []string
	}{
		{"everything", sdsNode(1, 30, nil), nil},
		{"default", sdsNode(1, 30, nil), []string{"default"}},
		{"the SVID by ID", sdsNode(1, 30, nil), []string{web.String()}},
		{"ROOTCA", sdsNode(1, 30, nil), []string{"ROOTCA"}},
		{"the trust domain", sdsNode(1, 30, nil), []string{"spiffe://" + td.Name()}},
		{"ALL", sdsNode(1, 30, nil), []string{"ALL"}},
		{"the partner", sdsNode(1, 30, nil), []string{"spiffe://partner.test"}},
		{"the partner for Envoy 1.17", sdsNode(1, 17, nil), []string{"spiffe://partner.test"}},
		{"ROOTCA for Envoy 1.17", sdsNode(1, 17, nil), []string{"ROOTCA"}},
		{"everything for Envoy 1.17", sdsNode(1, 17, nil), nil},
		{"validation disabled by the node", sdsNode(1, 30, disable), []string{"spiffe://" + td.Name()}},
		{"no node", nil, []string{"ROOTCA", "default"}},
		{"an ID without entry", sdsNode(1, 30, nil), []string{mustID(t, "/other").String()}},
		{"an unknown name", sdsNode(1, 30, nil), []string{"nothing-here"}},
	}
	for _, tc := range cases {
		var got []sdsAnswer
		for _, ag := range agents {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := ag.c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: tc.node, TypeUrl: sdsSecretType, ResourceNames: tc.names})
			cancel()
			fetched := reduceSDS(t, resp, err)

			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			st, err := ag.c.StreamSecrets(ctx)
			if err == nil {
				err = st.Send(&discoveryv3.DiscoveryRequest{Node: tc.node, TypeUrl: sdsSecretType, ResourceNames: tc.names})
			}
			var first *discoveryv3.DiscoveryResponse
			if err == nil {
				first, err = st.Recv()
			}
			streamed := reduceSDS(t, first, err)
			if err == nil && (first.VersionInfo != "1" || first.Nonce == "") {
				t.Errorf("%s, %s: first stream response version %q nonce %q, want version 1 and a nonce", ag.name, tc.what, first.VersionInfo, first.Nonce)
			}
			cancel()
			if fetched.String() != streamed.String() {
				t.Errorf("%s, %s: FetchSecrets gives %v, the stream %v", ag.name, tc.what, fetched, streamed)
			}
			got = append(got, fetched)
		}
		t.Logf("%s: %v", tc.what, got[0])
		if got[0].String() != got[1].String() {
			t.Errorf("%s: spire-agent answers %v, arbor %v", tc.what, got[0], got[1])
		}
		if tc.what == "everything" && len(got[1].secrets) != 3 {
			t.Errorf("everything: %v, want the two trust domains' validation contexts and the SVID", got[1])
		}
	}

	// ALL for an Envoy 1.17: refused by both, with different codes.
	for i, want := range []codes.Code{codes.Internal, codes.FailedPrecondition} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := agents[i].c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: sdsNode(1, 17, nil), TypeUrl: sdsSecretType, ResourceNames: []string{"ALL"}})
		cancel()
		if status.Code(err) != want {
			t.Errorf("%s: ALL for Envoy 1.17: %v, want %v", agents[i].name, err, want)
		}
	}

	// An ACK of the first response is answered by neither; a request for
	// other names with the last nonce is answered by both.
	for _, ag := range agents {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		st, err := ag.c.StreamSecrets(ctx)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		send := func(r *discoveryv3.DiscoveryRequest) {
			r.TypeUrl = sdsSecretType
			if err := st.Send(r); err != nil {
				t.Fatalf("%s: send: %v", ag.name, err)
			}
		}
		send(&discoveryv3.DiscoveryRequest{Node: sdsNode(1, 30, nil), ResourceNames: []string{"default"}})
		r1, err := st.Recv()
		if err != nil {
			t.Fatalf("%s: %v", ag.name, err)
		}
		send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce})
		send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce})
		r2, err := st.Recv()
		if got := reduceSDS(t, r2, err); len(got.secrets) != 1 || !strings.HasPrefix(got.secrets[0], "ROOTCA: ") {
			t.Errorf("%s: after an ACK and a request for ROOTCA the next response is %v, want ROOTCA only", ag.name, got)
		}
		cancel()
	}
}

// sdsPartnerRoot is a self-signed CA of spiffe://partner.test.
func sdsPartnerRoot(t *testing.T) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://partner.test")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partner.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
