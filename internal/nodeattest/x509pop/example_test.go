package x509pop_test

import (
	"context"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
)

// An agent attests with a provisioned certificate and key; the server
// verifies the chain and the proof of possession. In arbor the challenge
// crosses the agent.v1 AttestAgent stream; here it is a function call.
func Example() {
	dir, err := os.MkdirTemp("", "x509pop")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	pki, err := x509poptest.Generate(dir, x509poptest.GenerateOptions{Intermediate: true})
	if err != nil {
		panic(err)
	}

	// Agent: certificate_path and private_key_path.
	certs, key, err := x509pop.LoadIdentity(pki.CertPath, pki.KeyPath, "")
	if err != nil {
		panic(err)
	}
	payload, err := x509pop.AttestationPayload(certs)
	if err != nil {
		panic(err)
	}

	// Server: ca_bundle_path.
	roots, err := x509pop.LoadCertificates(pki.CABundlePath)
	if err != nil {
		panic(err)
	}
	attestor, err := x509pop.New(x509pop.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		TrustRoots:  roots,
	})
	if err != nil {
		panic(err)
	}
	res, err := attestor.Attest(context.Background(), payload, func(_ context.Context, challenge []byte) ([]byte, error) {
		return x509pop.ChallengeResponse(key, challenge, nil) // on the agent
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.AgentID == spiffeid.RequireFromString("spiffe://example.org/spire/agent/x509pop/"+x509pop.Fingerprint(certs[0])))
	fmt.Println(res.CanReattest)
	// Output:
	// true
	// true
}
