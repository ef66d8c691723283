// Command spirevectors writes test vectors for arbor's x509pop attestor by
// running SPIRE v1.13.3's own x509pop package (pkg/common/plugin/x509pop): the
// agent's attestation payload, a challenge with a fixed nonce and the agent's
// response, and the agent IDs SPIRE's agent path templates produce. It lives
// under testdata (ignored by the go tool) with its own go.mod so that arbor
// never depends on SPIRE. Regenerate with:
//
//	cd internal/nodeattest/x509pop/testdata/spirevectors
//	GOFLAGS=-mod=mod go run . > ../spire_v1.13.3_vectors.json
//
// "go run . verify < responses.json" checks challenge responses made by
// arbor's agent half with SPIRE's verifier (see verifyInput).
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log"
	"math/big"
	"net/url"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire/pkg/common/agentpathtemplate"
	"github.com/spiffe/spire/pkg/common/plugin/x509pop"
)

type vectorCase struct {
	Name      string            `json:"name"`
	Payload   json.RawMessage   `json:"payload"`
	Challenge json.RawMessage   `json:"challenge"`
	Response  json.RawMessage   `json:"response"`
	AgentIDs  map[string]string `json:"agent_ids"` // template ("" = default) -> ID
	KeyPEM    string            `json:"key_pem"`   // the leaf's key, PKCS#8
}

type vectors struct {
	Generator   string       `json:"generator"`
	TrustDomain string       `json:"trust_domain"`
	Now         time.Time    `json:"now"`
	RootPEM     string       `json:"root_pem"`
	Cases       []vectorCase `json:"cases"`
}

var (
	notBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC)
	templates = []string{
		"/cn/{{ .Subject.CommonName }}",
		"/{{ .PluginName }}/{{ .TrustDomain }}/{{ .SerialNumberHex }}",
		"/dc/{{ index .URISanSelectors \"datacenter\" }}/{{ .Fingerprint }}",
	}
)

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	der := must(x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer))
	return must(x509.ParseCertificate(der))
}

func caTemplate(cn string, serial int64) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

// verifyInput is what "spirevectors verify" reads on stdin: responses made
// by another implementation of the agent half, checked with SPIRE's verifier.
type verifyInput []struct {
	Name      string          `json:"name"`
	LeafPEM   string          `json:"leaf_pem"`
	Challenge json.RawMessage `json:"challenge"`
	Response  json.RawMessage `json:"response"`
}

func verify() {
	var in verifyInput
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		log.Fatal(err)
	}
	for _, c := range in {
		block, _ := pem.Decode([]byte(c.LeafPEM))
		leaf := must(x509.ParseCertificate(block.Bytes))
		var challenge x509pop.Challenge
		var response x509pop.Response
		if err := json.Unmarshal(c.Challenge, &challenge); err != nil {
			log.Fatalf("%s: challenge: %v", c.Name, err)
		}
		if err := json.Unmarshal(c.Response, &response); err != nil {
			log.Fatalf("%s: response: %v", c.Name, err)
		}
		if err := x509pop.VerifyChallengeResponse(leaf.PublicKey, &challenge, &response); err != nil {
			log.Fatalf("%s: SPIRE rejected the response: %v", c.Name, err)
		}
		fmt.Printf("%s: SPIRE v1.13.3 verified the response\n", c.Name)
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "verify" {
		verify()
		return
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	rootKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	root := create(caTemplate("arbor vectors root", 1), caTemplate("arbor vectors root", 1), rootKey.Public(), rootKey)
	interKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	inter := create(caTemplate("arbor vectors intermediate", 2), root, interKey.Public(), rootKey)

	keys := []struct {
		name string
		key  crypto.Signer
	}{
		{"ecdsa-p256", must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))},
		{"ecdsa-p384", must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))},
		{"rsa-2048", must(rsa.GenerateKey(rand.Reader, 2048))},
	}
	out := vectors{
		Generator:   "testdata/spirevectors (github.com/spiffe/spire v1.13.3 pkg/common/plugin/x509pop)",
		TrustDomain: td.Name(),
		Now:         time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
		RootPEM:     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})),
	}
	for i, k := range keys {
		leafTmpl := &x509.Certificate{
			SerialNumber: big.NewInt(0xa1b2c + int64(i)),
			Subject:      pkix.Name{CommonName: "node-" + k.name + ".example.org"},
			NotBefore:    notBefore,
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			URIs: []*url.URL{
				must(url.Parse("x509pop://example.org/datacenter/us-east-1")),
				must(url.Parse("x509pop://example.org/rack/r1/slot2")),
				must(url.Parse("spiffe://example.org/not-a-selector")),
			},
		}
		leaf := create(leafTmpl, inter, k.key.Public(), interKey)

		payload := must(json.Marshal(x509pop.AttestationData{Certificates: [][]byte{leaf.Raw, inter.Raw}}))
		nonce := make([]byte, 32)
		for j := range nonce {
			nonce[j] = byte(32*i + j)
		}
		var challenge x509pop.Challenge
		if _, ok := k.key.(*rsa.PrivateKey); ok {
			challenge.RSASignature = &x509pop.RSASignatureChallenge{Nonce: nonce}
		} else {
			challenge.ECDSASignature = &x509pop.ECDSASignatureChallenge{Nonce: nonce}
		}
		challengeJSON := must(json.Marshal(&challenge))
		response := must(x509pop.CalculateResponse(k.key, &challenge))
		if err := x509pop.VerifyChallengeResponse(leaf.PublicKey, &challenge, response); err != nil {
			log.Fatal(err)
		}
		responseJSON := must(json.Marshal(response))

		sans := map[string]string{"datacenter": "us-east-1", "rack": "r1/slot2"}
		ids := map[string]string{
			"": must(x509pop.MakeAgentID(td, x509pop.DefaultAgentPathTemplateCN, leaf, "", sans)).String(),
		}
		for _, t := range templates {
			ids[t] = must(x509pop.MakeAgentID(td, agentpathtemplate.MustParse(t), leaf, "", sans)).String()
		}
		out.Cases = append(out.Cases, vectorCase{
			Name:      k.name,
			Payload:   payload,
			Challenge: challengeJSON,
			Response:  responseJSON,
			AgentIDs:  ids,
			KeyPEM:    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(k.key))})),
		})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		log.Fatal(err)
	}
}
