package x509pop_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
)

// constReader reads as an endless run of one byte. Stateless, so it is safe
// for the concurrent reads Config.Rand allows.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// FuzzAttest sends arbitrary attestation payloads and challenge responses to
// the server side of x509pop. The challenge nonce is pinned, so the seeds
// hold responses that succeed as well as ones that do not. Attest must never
// panic; it must refuse with exactly one of ErrInvalid and ErrDenied, and
// what it accepts must be an agent ID under /spire/agent/x509pop/ with valid
// x509pop selectors.
func FuzzAttest(f *testing.F) {
	root := must(x509poptest.NewRootCA(x509poptest.CAOptions{CommonName: "root", NotBefore: notBefore, NotAfter: notAfter}))
	inter := must(root.NewIntermediate("intermediate"))
	other := must(x509poptest.NewRootCA(x509poptest.CAOptions{CommonName: "other", NotBefore: notBefore, NotAfter: notAfter}))
	a := must(x509pop.New(x509pop.Config{
		TrustDomain: td,
		TrustRoots:  []*x509.Certificate{root.Cert},
		Now:         func() time.Time { return now },
		Rand:        constReader(0x42),
	}))

	// respond answers the pinned challenge for node's key, as its agent does.
	respond := func(node *x509poptest.Node) []byte {
		var challenge []byte
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Attest(ctx, must(x509pop.AttestationPayload(node.Chain)), func(_ context.Context, c []byte) ([]byte, error) {
			challenge = c
			return nil, errors.New("only recording the challenge")
		})
		if challenge == nil {
			f.Fatal("Attest sent no challenge for a trusted node certificate")
		}
		return must(x509pop.ChallengeResponse(node.Key, challenge, nil))
	}
	ec := must(inter.NewNode(x509poptest.NodeOptions{CommonName: "ec"}))
	rsaNode := must(inter.NewNode(x509poptest.NodeOptions{CommonName: "rsa", KeyType: x509poptest.RSA2048}))
	untrusted := must(other.NewNode(x509poptest.NodeOptions{}))
	ecPayload, ecResponse := must(x509pop.AttestationPayload(ec.Chain)), respond(ec)
	rsaPayload, rsaResponse := must(x509pop.AttestationPayload(rsaNode.Chain)), respond(rsaNode)
	// The answered seeds must attest, or the fuzzer never reaches the
	// accepting end.
	for _, seed := range [][2][]byte{{ecPayload, ecResponse}, {rsaPayload, rsaResponse}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := a.Attest(ctx, seed[0], func(context.Context, []byte) ([]byte, error) { return seed[1], nil })
		cancel()
		if err != nil {
			f.Fatalf("Attest() of an answered seed = %v, want success", err)
		}
	}

	f.Add(ecPayload, ecResponse)
	f.Add(rsaPayload, rsaResponse)
	f.Add(ecPayload, rsaResponse)
	f.Add(rsaPayload, ecResponse)
	f.Add(ecPayload, []byte(`{}`))
	f.Add(ecPayload, []byte(`null`))
	f.Add(ecPayload, []byte(``))
	f.Add(ecPayload, ecResponse[:len(ecResponse)/2])
	f.Add(ecPayload, []byte(`{"ecdsa_signature":{"nonce":"AAAA","r":"AQ==","s":"AQ=="}}`))
	f.Add(rsaPayload, []byte(`{"rsa_signature":{"nonce":"QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=","signature":""}}`))
	f.Add(must(x509pop.AttestationPayload(ec.Chain[:1])), ecResponse)
	f.Add(must(x509pop.AttestationPayload(untrusted.Chain)), ecResponse)
	f.Add(must(x509pop.AttestationPayload([]*x509.Certificate{root.Cert})), ecResponse)
	f.Add([]byte(`{"certificates":[]}`), ecResponse)
	f.Add([]byte(`{"certificates":["AAAA"]}`), ecResponse)
	f.Add([]byte(`{"certificates":null}`), ecResponse)
	f.Add([]byte(`{"certificates":["`+strings.Repeat(`MA==","`, 40)+`MA=="]}`), ecResponse)
	f.Add([]byte(`{}`), []byte(`{}`))
	f.Add([]byte(`null`), []byte(nil))
	f.Add([]byte("\x00\xff garbage"), []byte("\x00"))
	f.Add(ecPayload[:len(ecPayload)-3], ecResponse)

	f.Fuzz(func(t *testing.T, payload, response []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		challenges := 0
		res, err := a.Attest(ctx, payload, func(context.Context, []byte) ([]byte, error) {
			challenges++
			return response, nil
		})
		if challenges > 1 {
			t.Fatalf("Attest sent %d challenges, want at most 1", challenges)
		}
		if err != nil {
			invalid, denied := errors.Is(err, nodeattest.ErrInvalid), errors.Is(err, nodeattest.ErrDenied)
			if invalid == denied {
				t.Fatalf("Attest() = %v, want exactly one of ErrInvalid and ErrDenied", err)
			}
			if res != nil {
				t.Fatalf("Attest() = %+v with error %v, want a nil result", res, err)
			}
			if !strings.HasPrefix(err.Error(), "x509pop: ") {
				t.Fatalf("Attest() error %q lacks the x509pop: prefix", err)
			}
			return
		}
		if challenges != 1 {
			t.Fatalf("Attest() succeeded after %d challenges, want 1", challenges)
		}
		if err := idpolicy.AgentID(td, res.AgentID); err != nil || !strings.HasPrefix(res.AgentID.Path(), "/spire/agent/x509pop/") {
			t.Fatalf("Attest() agent ID %q is not an x509pop agent ID: %v", res.AgentID, err)
		}
		if !res.CanReattest || len(res.Selectors) == 0 {
			t.Fatalf("Attest() = %+v, want re-attestable with selectors", res)
		}
		for _, s := range res.Selectors {
			if err := s.Validate(); err != nil || s.Type != x509pop.Type {
				t.Fatalf("Attest() selector %+v is not a valid x509pop selector: %v", s, err)
			}
		}
	})
}
