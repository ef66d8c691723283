package agent_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// TestWorkloadGetsFederatedBundles: an entry that federates with another
// trust domain gives its workload that domain's bundle — with its X509-SVID
// and from the bundle stream — and a change of it reaches an open stream.
func TestWorkloadGetsFederatedBundles(t *testing.T) {
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	srv := startServer(t, nil)
	root := func(cn string) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		mustOK(t, err, "partner root")
		return der
	}
	first := root("partner root 1")
	set := func(ders ...[]byte) {
		b := &types.Bundle{TrustDomain: partner.Name()}
		for _, d := range ders {
			b.X509Authorities = append(b.X509Authorities, &types.X509Certificate{Asn1: d})
		}
		resp, err := bundlev1.NewBundleClient(srv.admin).BatchSetFederatedBundle(ctxT(t), &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{b}})
		mustOK(t, err, "BatchSetFederatedBundle")
		if st := resp.Results[0].Status; st.Code != 0 {
			t.Fatalf("BatchSetFederatedBundle: %v", st)
		}
	}
	set(first)
	token := srv.token()
	srv.createEntry(&types.Entry{ParentId: protoID(agentPath(token)), SpiffeId: protoID(spiffeid.RequireFromPath(td, "/fed")),
		Selectors: []*types.Selector{{Type: "test", Value: "id:fed"}}, FederatesWith: []string{partner.Name()}})
	att := newPIDAttestor()
	att.set(os.Getpid(), "fed")
	cfg := srv.agentConfig(t, token, att)
	runAgent(t, cfg)

	ch := watchX509(t, socketAddr(cfg))
	c := next(t, ch, 10*time.Second, "first X509 context")
	for {
		if b, ok := c.Bundles.Get(partner); ok && hasCert(b.X509Authorities(), first) {
			break
		}
		c = next(t, ch, 10*time.Second, "X509 context with the partner's bundle")
	}
	poll(t, 10*time.Second, "FetchX509Bundles with the partner's bundle", func() error {
		bs, err := workloadapi.FetchX509Bundles(ctxT(t), workloadapi.WithAddr(socketAddr(cfg)))
		if err != nil {
			return err
		}
		if b, ok := bs.Get(partner); !ok || !hasCert(b.X509Authorities(), first) {
			return errors.New("no partner bundle yet")
		}
		return nil
	})

	second := root("partner root 2")
	set(first, second)
	for {
		c = next(t, ch, 10*time.Second, "X509 context with the partner's new root")
		if b, ok := c.Bundles.Get(partner); ok && hasCert(b.X509Authorities(), second) {
			break
		}
	}
}
