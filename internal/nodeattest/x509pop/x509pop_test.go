package x509pop_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // SPIRE's fingerprint
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
	"github.com/arborid/arbor/internal/selector"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	notBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now       = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	idCmp     = cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// must unwraps the result of test setup; setup failing panics, which fails
// the test with a stack trace.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func newRoot(t *testing.T) *x509poptest.CA {
	t.Helper()
	return must(x509poptest.NewRootCA(x509poptest.CAOptions{CommonName: "root", NotBefore: notBefore, NotAfter: notAfter}))
}

func newAttestor(t *testing.T, roots []*x509.Certificate, template string) *x509pop.Attestor {
	t.Helper()
	return must(x509pop.New(x509pop.Config{
		TrustDomain:       td,
		TrustRoots:        roots,
		AgentPathTemplate: template,
		Now:               func() time.Time { return now },
	}))
}

func fingerprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw) //nolint:gosec // SPIRE's fingerprint
	return hex.EncodeToString(sum[:])
}

// agentChallenge answers challenges as an agent holding node's key would,
// counting them.
func agentChallenge(t *testing.T, node *x509poptest.Node, calls *int) nodeattest.ChallengeFunc {
	return func(_ context.Context, c []byte) ([]byte, error) {
		*calls++
		return x509pop.ChallengeResponse(node.Key, c, nil)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		keyType      x509poptest.KeyType
		intermediate bool
	}{
		{x509poptest.ECP256, false},
		{x509poptest.ECP256, true},
		{x509poptest.ECP384, true},
		{x509poptest.RSA2048, false},
		{x509poptest.RSA2048, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/intermediate=%v", tt.keyType, tt.intermediate), func(t *testing.T) {
			ctx := testContext(t)
			root := newRoot(t)
			issuer := root
			if tt.intermediate {
				issuer = must(root.NewIntermediate("intermediate"))
			}
			node := must(issuer.NewNode(x509poptest.NodeOptions{
				CommonName:   "node-1.example.org",
				KeyType:      tt.keyType,
				SerialNumber: big.NewInt(0xabc),
				URIs: []*url.URL{
					must(url.Parse("x509pop://example.org/datacenter/us-east-1")),
					must(url.Parse("x509pop://example.org/rack/r1/slot2")),
					must(url.Parse("x509pop://other.org/datacenter/eu")), // other trust domain
					must(url.Parse("x509pop://example.org/lonely")),      // no value
					must(url.Parse("spiffe://example.org/workload")),
				},
			}))
			payload := must(x509pop.AttestationPayload(node.Chain))

			a := newAttestor(t, []*x509.Certificate{root.Cert}, "")
			if a.Type() != "x509pop" {
				t.Errorf("Type() = %q, want x509pop", a.Type())
			}
			calls := 0
			got, err := a.Attest(ctx, payload, agentChallenge(t, node, &calls))
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if calls != 1 {
				t.Errorf("Attest sent %d challenges, want 1", calls)
			}

			wantSelectors := []selector.Selector{
				{Type: "x509pop", Value: "subject:cn:node-1.example.org"},
				{Type: "x509pop", Value: "ca:fingerprint:" + fingerprint(root.Cert)},
				{Type: "x509pop", Value: "serialnumber:0abc"},
				{Type: "x509pop", Value: "san:datacenter:us-east-1"},
				{Type: "x509pop", Value: "san:rack:r1/slot2"},
			}
			if tt.intermediate {
				wantSelectors = append(wantSelectors, selector.Selector{Type: "x509pop", Value: "ca:fingerprint:" + fingerprint(issuer.Cert)})
			}
			want := &nodeattest.Result{
				AgentID:     spiffeid.RequireFromString("spiffe://example.org/spire/agent/x509pop/" + fingerprint(node.Leaf())),
				Selectors:   selector.Sorted(wantSelectors),
				CanReattest: true,
			}
			if diff := cmp.Diff(want, got, idCmp); diff != "" {
				t.Errorf("Attest() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// A trust bundle holding the intermediate itself (not the root) is enough,
// as with SPIRE's x509.Verify.
func TestTrustRootIsIntermediate(t *testing.T) {
	ctx := testContext(t)
	inter := must(newRoot(t).NewIntermediate("intermediate"))
	node := must(inter.NewNode(x509poptest.NodeOptions{}))
	a := newAttestor(t, []*x509.Certificate{inter.Cert}, "")
	calls := 0
	if _, err := a.Attest(ctx, must(x509pop.AttestationPayload(node.Chain[:1])), agentChallenge(t, node, &calls)); err != nil {
		t.Fatalf("Attest() = %v, want success", err)
	}
}

func TestAttestFails(t *testing.T) {
	root := newRoot(t)
	inter := must(root.NewIntermediate("intermediate"))
	otherRoot := newRoot(t)
	good := must(inter.NewNode(x509poptest.NodeOptions{CommonName: "good"}))
	goodRSA := must(inter.NewNode(x509poptest.NodeOptions{KeyType: x509poptest.RSA2048}))
	untrusted := must(otherRoot.NewNode(x509poptest.NodeOptions{}))
	expired := must(inter.NewNode(x509poptest.NodeOptions{NotBefore: notBefore, NotAfter: now.Add(-time.Second)}))
	notYetValid := must(inter.NewNode(x509poptest.NodeOptions{NotBefore: now.Add(time.Second), NotAfter: notAfter}))
	noDigitalSignature := must(inter.NewNode(x509poptest.NodeOptions{KeyUsage: x509.KeyUsageKeyEncipherment}))
	spaceCN := must(inter.NewNode(x509poptest.NodeOptions{CommonName: "has space"}))
	wrongKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	boom := errors.New("stream broke")

	payload := func(certs ...*x509.Certificate) []byte { return must(x509pop.AttestationPayload(certs)) }
	rawPayload := func(ders ...[]byte) []byte { return must(json.Marshal(map[string]any{"certificates": ders})) }
	respond := func(node *x509poptest.Node) nodeattest.ChallengeFunc {
		return func(_ context.Context, c []byte) ([]byte, error) { return x509pop.ChallengeResponse(node.Key, c, nil) }
	}
	reply := func(resp string) nodeattest.ChallengeFunc {
		return func(context.Context, []byte) ([]byte, error) { return []byte(resp), nil }
	}
	// mutate answers correctly and then alters the decoded response.
	mutate := func(node *x509poptest.Node, fn func(m map[string]map[string][]byte)) nodeattest.ChallengeFunc {
		return func(_ context.Context, c []byte) ([]byte, error) {
			raw, err := x509pop.ChallengeResponse(node.Key, c, nil)
			if err != nil {
				return nil, err
			}
			var m map[string]map[string][]byte
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, err
			}
			fn(m)
			return json.Marshal(m)
		}
	}

	tests := []struct {
		name          string
		payload       []byte
		template      string
		challenge     nodeattest.ChallengeFunc
		wantErr       error
		wantChallenge bool // a challenge was sent
	}{
		{name: "payload not JSON", payload: []byte("nope"), wantErr: nodeattest.ErrInvalid},
		{name: "payload empty", payload: nil, wantErr: nodeattest.ErrInvalid},
		{name: "no certificates", payload: []byte(`{"certificates":[]}`), wantErr: nodeattest.ErrInvalid},
		{name: "certificates not base64", payload: []byte(`{"certificates":["%%%"]}`), wantErr: nodeattest.ErrInvalid},
		{name: "leaf not DER", payload: rawPayload([]byte("garbage")), wantErr: nodeattest.ErrInvalid},
		{name: "intermediate not DER", payload: rawPayload(good.Leaf().Raw, []byte("garbage")), wantErr: nodeattest.ErrInvalid},
		{name: "too many certificates", payload: rawPayload(bytes.Split(bytes.Repeat([]byte("x,"), 40), []byte(","))...), wantErr: nodeattest.ErrInvalid},
		{name: "untrusted", payload: payload(untrusted.Chain...), wantErr: nodeattest.ErrDenied},
		{name: "intermediate missing", payload: payload(good.Leaf()), wantErr: nodeattest.ErrDenied},
		{name: "expired at now", payload: payload(expired.Chain...), wantErr: nodeattest.ErrDenied},
		{name: "not yet valid at now", payload: payload(notYetValid.Chain...), wantErr: nodeattest.ErrDenied},
		{name: "no digitalSignature key usage", payload: payload(noDigitalSignature.Chain...), wantErr: nodeattest.ErrDenied},
		{
			name: "signed by another key", payload: payload(good.Chain...),
			challenge: respond(&x509poptest.Node{Chain: good.Chain, Key: wrongKey}), wantErr: nodeattest.ErrDenied, wantChallenge: true,
		},
		{
			name: "RSA signed by another key", payload: payload(goodRSA.Chain...),
			challenge: respond(&x509poptest.Node{Chain: good.Chain, Key: must(x509poptest.GenerateKey(x509poptest.RSA2048))}),
			wantErr:   nodeattest.ErrDenied, wantChallenge: true,
		},
		{
			name: "signature over another nonce", payload: payload(good.Chain...),
			challenge: mutate(good, func(m map[string]map[string][]byte) { m["ecdsa_signature"]["nonce"][0] ^= 1 }),
			wantErr:   nodeattest.ErrDenied, wantChallenge: true,
		},
		{
			name: "RSA signature altered", payload: payload(goodRSA.Chain...),
			challenge: mutate(goodRSA, func(m map[string]map[string][]byte) { m["rsa_signature"]["signature"][5] ^= 1 }),
			wantErr:   nodeattest.ErrDenied, wantChallenge: true,
		},
		{
			name: "short response nonce", payload: payload(good.Chain...),
			challenge: mutate(good, func(m map[string]map[string][]byte) { m["ecdsa_signature"]["nonce"] = []byte("short") }),
			wantErr:   nodeattest.ErrInvalid, wantChallenge: true,
		},
		{name: "response not JSON", payload: payload(good.Chain...), challenge: reply("{"), wantErr: nodeattest.ErrInvalid, wantChallenge: true},
		{name: "response empty", payload: payload(good.Chain...), challenge: reply(""), wantErr: nodeattest.ErrInvalid, wantChallenge: true},
		{
			name: "RSA response for ECDSA key", payload: payload(good.Chain...),
			challenge: reply(`{"rsa_signature":{"nonce":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `","signature":"AA=="},"ecdsa_signature":null}`),
			wantErr:   nodeattest.ErrInvalid, wantChallenge: true,
		},
		{
			name: "ECDSA response for RSA key", payload: payload(goodRSA.Chain...),
			challenge: reply(`{"rsa_signature":null,"ecdsa_signature":{"nonce":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `","r":"AQ==","s":"AQ=="}}`),
			wantErr:   nodeattest.ErrInvalid, wantChallenge: true,
		},
		{
			name: "challenge transport fails", payload: payload(good.Chain...),
			challenge: func(context.Context, []byte) ([]byte, error) { return nil, boom }, wantErr: boom, wantChallenge: true,
		},
		{
			name: "template renders invalid path", payload: payload(spaceCN.Chain...), template: "/cn/{{ .Subject.CommonName }}",
			challenge: respond(spaceCN), wantErr: nodeattest.ErrDenied, wantChallenge: true,
		},
		{
			name: "template renders empty path", payload: payload(good.Chain...), template: "{{ .SVIDPathTrimmed }}",
			challenge: respond(good), wantErr: nodeattest.ErrDenied, wantChallenge: true,
		},
		{
			name: "template names a missing SAN key", payload: payload(good.Chain...), template: "/dc/{{ .URISanSelectors.datacenter }}",
			challenge: respond(good), wantErr: nodeattest.ErrDenied, wantChallenge: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			a := newAttestor(t, []*x509.Certificate{root.Cert}, tt.template)
			challenged := false
			challenge := func(ctx context.Context, c []byte) ([]byte, error) {
				challenged = true
				if tt.challenge == nil {
					return nil, errors.New("test sent no challenge handler")
				}
				return tt.challenge(ctx, c)
			}
			res, err := a.Attest(ctx, tt.payload, challenge)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Attest() error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != boom && errors.Is(err, nodeattest.ErrInvalid) == errors.Is(err, nodeattest.ErrDenied) {
				t.Errorf("Attest() error = %v, want exactly one of ErrInvalid, ErrDenied", err)
			}
			if res != nil {
				t.Errorf("Attest() = %+v, want nil result on error", res)
			}
			if challenged != tt.wantChallenge {
				t.Errorf("challenge sent = %v, want %v", challenged, tt.wantChallenge)
			}
			if !strings.HasPrefix(err.Error(), "x509pop: ") {
				t.Errorf("Attest() error %q lacks the x509pop: prefix", err)
			}
		})
	}
}

func TestChallengeUsesRand(t *testing.T) {
	ctx := testContext(t)
	root := newRoot(t)
	tests := []struct {
		keyType x509poptest.KeyType
		want    string // %s is the nonce
	}{
		{x509poptest.ECP256, `{"rsa_signature":null,"ecdsa_signature":{"nonce":"%s"}}`},
		{x509poptest.RSA2048, `{"rsa_signature":{"nonce":"%s"},"ecdsa_signature":null}`},
	}
	for _, tt := range tests {
		t.Run(string(tt.keyType), func(t *testing.T) {
			node := must(root.NewNode(x509poptest.NodeOptions{KeyType: tt.keyType}))
			nonce := bytes.Repeat([]byte{7}, 32)
			a := must(x509pop.New(x509pop.Config{
				TrustDomain: td, TrustRoots: []*x509.Certificate{root.Cert},
				Now: func() time.Time { return now }, Rand: bytes.NewReader(nonce),
			}))
			var got []byte
			_, err := a.Attest(ctx, must(x509pop.AttestationPayload(node.Chain)), func(_ context.Context, c []byte) ([]byte, error) {
				got = c
				return x509pop.ChallengeResponse(node.Key, c, nil)
			})
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			want := fmt.Sprintf(tt.want, base64.StdEncoding.EncodeToString(nonce))
			if string(got) != want {
				t.Errorf("challenge = %s, want %s", got, want)
			}
		})
	}
}

func TestAgentPathTemplate(t *testing.T) {
	ctx := testContext(t)
	root := newRoot(t)
	node := must(root.NewNode(x509poptest.NodeOptions{
		CommonName:   "Node-7",
		SerialNumber: big.NewInt(0x1234),
		URIs:         []*url.URL{must(url.Parse("x509pop://example.org/datacenter/us-east-1"))},
	}))
	tests := []struct {
		template string
		wantPath string
	}{
		{"", "/spire/agent/x509pop/" + fingerprint(node.Leaf())},
		{"/cn/{{ .Subject.CommonName }}", "/spire/agent/cn/Node-7"},
		{"/{{ .PluginName }}/{{ .TrustDomain }}/{{ .SerialNumberHex }}", "/spire/agent/x509pop/example.org/1234"},
		{"/dc/{{ .URISanSelectors.datacenter }}/{{ .Subject.CommonName | lower }}", "/spire/agent/dc/us-east-1/node-7"},
		{`/{{ .Subject.CommonName | trimPrefix "Node-" }}/{{ replace "-" "_" "a-b" }}`, "/spire/agent/7/a_b"},
		{`/h/{{ sha256sum .Subject.CommonName | trunc8 }}`, ""}, // trunc8 is no function: parse error
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			a, err := x509pop.New(x509pop.Config{
				TrustDomain: td, TrustRoots: []*x509.Certificate{root.Cert},
				AgentPathTemplate: tt.template, Now: func() time.Time { return now },
			})
			if tt.wantPath == "" {
				if err == nil {
					t.Fatalf("New(template %q) = nil error, want parse error", tt.template)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(template %q) = %v", tt.template, err)
			}
			calls := 0
			res, err := a.Attest(ctx, must(x509pop.AttestationPayload(node.Chain)), agentChallenge(t, node, &calls))
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if got := res.AgentID.Path(); got != tt.wantPath {
				t.Errorf("agent ID path = %q, want %q", got, tt.wantPath)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	root := newRoot(t)
	tests := []struct {
		name string
		c    x509pop.Config
	}{
		{"no trust domain", x509pop.Config{TrustRoots: []*x509.Certificate{root.Cert}}},
		{"no roots", x509pop.Config{TrustDomain: td}},
		{"nil root", x509pop.Config{TrustDomain: td, TrustRoots: []*x509.Certificate{nil}}},
		{"bad template", x509pop.Config{TrustDomain: td, TrustRoots: []*x509.Certificate{root.Cert}, AgentPathTemplate: "{{"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := x509pop.New(tt.c); err == nil {
				t.Errorf("New(%s) = nil error, want error", tt.name)
			}
		})
	}
}

func TestAgentHalfErrors(t *testing.T) {
	ecKey := must(x509poptest.GenerateKey(x509poptest.ECP256))
	rsaKey := must(x509poptest.GenerateKey(x509poptest.RSA2048))
	nonce := base64.StdEncoding.EncodeToString(make([]byte, 32))
	if _, err := x509pop.AttestationPayload(nil); err == nil {
		t.Error("AttestationPayload(nil) = nil error, want error")
	}
	if _, err := x509pop.AttestationPayload([]*x509.Certificate{{}}); err == nil {
		t.Error("AttestationPayload(certificate without DER) = nil error, want error")
	}
	tests := []struct {
		name      string
		key       crypto.Signer
		challenge string
	}{
		{"not JSON", ecKey, "{"},
		{"RSA challenge for ECDSA key", ecKey, `{"rsa_signature":{"nonce":"` + nonce + `"},"ecdsa_signature":null}`},
		{"ECDSA challenge for RSA key", rsaKey, `{"rsa_signature":null,"ecdsa_signature":{"nonce":"` + nonce + `"}}`},
		{"short nonce", ecKey, `{"rsa_signature":null,"ecdsa_signature":{"nonce":"AAAA"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := x509pop.ChallengeResponse(tt.key, []byte(tt.challenge), nil); err == nil {
				t.Errorf("ChallengeResponse(%s) = nil error, want error", tt.challenge)
			}
		})
	}
}
