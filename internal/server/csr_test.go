package server_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"sync"
	"testing"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// badCSR is a CSR every RPC that takes one must refuse with InvalidArgument.
type badCSR struct {
	name string
	der  func(t *testing.T, uris ...*url.URL) []byte
	// svidOnly: refused where an SVID is asked for, allowed for a
	// downstream CA (which is a CA).
	svidOnly bool
}

func badCSRs() []badCSR {
	withKey := func(key crypto.Signer) func(t *testing.T, uris ...*url.URL) []byte {
		return func(t *testing.T, uris ...*url.URL) []byte { return csrFor(t, key, uris...) }
	}
	rsa1024 := func() crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			panic(err)
		}
		return k
	}()
	p224 := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}()
	return []badCSR{
		{name: "rsa-1024 key", der: withKey(rsa1024)},
		{name: "ec-p224 key", der: withKey(p224)},
		{name: "empty", der: func(*testing.T, ...*url.URL) []byte { return nil }},
		{name: "not DER", der: func(*testing.T, ...*url.URL) []byte { return []byte("-----BEGIN CERTIFICATE REQUEST-----") }},
		{name: "truncated", der: func(t *testing.T, uris ...*url.URL) []byte {
			der := csrFor(t, newKey(t), uris...)
			return der[:len(der)/2]
		}},
		{name: "signature does not verify", der: func(t *testing.T, uris ...*url.URL) []byte {
			der := csrFor(t, newKey(t), uris...)
			der[len(der)-1] ^= 0xff // inside the signature's last INTEGER
			return der
		}},
		{name: "oversize", der: func(t *testing.T, uris ...*url.URL) []byte {
			tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, URIs: uris}
			for range 2000 {
				tmpl.DNSNames = append(tmpl.DNSNames, "padding-padding-padding.example.org")
			}
			return must(x509.CreateCertificateRequest(rand.Reader, tmpl, newKey(t)))(t)
		}},
		{name: "requests CA:true", svidOnly: true, der: func(t *testing.T, uris ...*url.URL) []byte {
			bc := must(asn1.Marshal(struct{ IsCA bool }{true}))(t)
			tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, URIs: uris,
				ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}}}
			return must(x509.CreateCertificateRequest(rand.Reader, tmpl, newKey(t)))(t)
		}},
	}
}

// TestBadCSRsAreInvalidArgumentEverywhere: every RPC that takes a CSR
// refuses a weak, malformed or CA-requesting one with InvalidArgument before
// it signs anything, and a refused AttestAgent leaves its join token usable.
func TestBadCSRsAreInvalidArgumentEverywhere(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	entryID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/web"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
	dsID := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/tier/child"), Selectors: []*types.Selector{sel("unix", "uid:2")}, Downstream: true})
	child := must(h.workloadSVID(agent, dsID))(t)
	agentConn := h.dial(agent)
	childSVIDs := svidv1.NewSVIDClient(h.dial(child))
	before := h.snapshot()

	for _, bc := range badCSRs() {
		t.Run(bc.name, func(t *testing.T) {
			token := h.token(600)
			calls := []struct {
				rpc  string
				call func() error
			}{
				{"AttestAgent", func() error {
					return attestWithCSR(t, h, token, bc.der(t))
				}},
				{"RenewAgent", func() error {
					_, err := agentv1.NewAgentClient(agentConn).RenewAgent(ctxT(t), &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: bc.der(t)}})
					return err
				}},
				{"BatchNewX509SVID", func() error {
					resp, err := svidv1.NewSVIDClient(agentConn).BatchNewX509SVID(ctxT(t), &svidv1.BatchNewX509SVIDRequest{
						Params: []*svidv1.NewX509SVIDParams{{EntryId: entryID, Csr: bc.der(t)}}})
					if err != nil {
						return err
					}
					st := resp.Results[0].Status
					return status.Error(codes.Code(st.Code), st.Message)
				}},
				{"MintX509SVID", func() error {
					_, err := svidv1.NewSVIDClient(h.admin).MintX509SVID(ctxT(t), &svidv1.MintX509SVIDRequest{Csr: bc.der(t, spiffeID("/minted").URL())})
					return err
				}},
				{"NewDownstreamX509CA", func() error {
					_, err := childSVIDs.NewDownstreamX509CA(ctxT(t), &svidv1.NewDownstreamX509CARequest{Csr: bc.der(t, td.ID().URL())})
					return err
				}},
			}
			for _, c := range calls {
				err := c.call()
				want := codes.InvalidArgument
				if bc.svidOnly && c.rpc == "NewDownstreamX509CA" {
					want = codes.OK
				}
				if got := status.Code(err); got != want {
					t.Errorf("%s with a CSR (%s): %v, want %v", c.rpc, bc.name, err, want)
				}
			}
			// The refused attestation consumed nothing: the token still works.
			if _, err := h.attest(token); err != nil {
				t.Errorf("attest with the token after a refused CSR (%s): %v, want success", bc.name, err)
			}
		})
	}
	after := h.snapshot()
	// Each subtest attested one agent with its token; nothing else changed.
	if got, want := len(after.Agents), len(before.Agents)+len(badCSRs()); got != want {
		t.Errorf("agents after the bad CSRs = %d, want %d (one good attestation per case)", got, want)
	}
	if len(after.Entries) != len(before.Entries) {
		t.Errorf("entries after the bad CSRs = %d, want %d", len(after.Entries), len(before.Entries))
	}
}

func attestWithCSR(t *testing.T, h *harness, token string, csr []byte) error {
	stream, err := agentv1.NewAgentClient(h.dial(nil)).AttestAgent(ctxT(t))
	if err != nil {
		return err
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}}); err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// TestJoinTokenRaceHasOneWinner: one token, many parallel AttestAgent calls
// (each validated, attested and signed before the token is consumed with
// the node write): exactly one gets an SVID, the others PermissionDenied.
func TestJoinTokenRaceHasOneWinner(t *testing.T) {
	h := startServer(t)
	for round := range 5 {
		token := h.token(600)
		const callers = 20
		errs := make([]error, callers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range callers {
			wg.Go(func() {
				<-start
				_, errs[i] = h.attest(token)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch status.Code(err) {
			case codes.OK:
				won++
			case codes.PermissionDenied:
			default:
				t.Errorf("round %d caller %d: %v, want OK or PermissionDenied", round, i, err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d of %d parallel attestations with one token succeeded, want exactly 1", round, won, callers)
		}
	}
}
