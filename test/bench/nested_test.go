package bench

import (
	"context"
	"crypto/x509"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/server"
)

type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s staticSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle, nil
}

// mintFor has e's agent mint an X509-SVID for entry id.
func (e *env) mintFor(id string) *x509svid.SVID {
	key, der := csr(e.b)
	resp, err := svidv1.NewSVIDClient(e.dial(e.agent)).BatchNewX509SVID(context.Background(),
		&svidv1.BatchNewX509SVIDRequest{Params: []*svidv1.NewX509SVIDParams{{EntryId: id, Csr: der}}})
	check(e.b, err)
	var chain []*x509.Certificate
	for _, c := range resp.Results[0].Svid.CertChain {
		cert, err := x509.ParseCertificate(c)
		check(e.b, err)
		chain = append(chain, cert)
	}
	sid, err := x509svid.IDFromCert(chain[0])
	check(e.b, err)
	return &x509svid.SVID{ID: sid, Certificates: chain, PrivateKey: key}
}

// issueRate runs BatchNewX509SVID for e's entries from 8 workers for d.
func (e *env) issueRate(ids []string, csrs [][]byte, d time.Duration) float64 {
	c1, c2 := svidv1.NewSVIDClient(e.dial(e.agent)), svidv1.NewSVIDClient(e.dial(e.agent))
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 8 {
		client := c1
		if w%2 == 1 {
			client = c2
		}
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				params := make([]*svidv1.NewX509SVIDParams, len(ids))
				for j, id := range ids {
					params[j] = &svidv1.NewX509SVIDParams{EntryId: id, Csr: csrs[(i*len(ids)+j+w)%len(csrs)]}
				}
				resp, err := client.BatchNewX509SVID(context.Background(), &svidv1.BatchNewX509SVIDRequest{Params: params})
				if err != nil {
					e.b.Error(err)
					return
				}
				n.Add(int64(len(resp.Results)))
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// BenchmarkNestedIssuance compares X509-SVID issuance of a leaf two tiers
// below the root with the root's own, in alternating windows of one run:
// nesting must cost nothing on the hot path.
func BenchmarkNestedIssuance(b *testing.B) {
	root := startServer(b, nil)
	down := func(parent *env, name string) *env {
		resp, err := entryv1.NewEntryClient(parent.admin).BatchCreateEntry(context.Background(), &entryv1.BatchCreateEntryRequest{
			Entries: []*types.Entry{{
				ParentId:   &types.SPIFFEID{TrustDomain: td.Name(), Path: parent.agent.ID.Path()},
				SpiffeId:   &types.SPIFFEID{TrustDomain: td.Name(), Path: "/tier/" + name},
				Selectors:  []*types.Selector{{Type: "unix", Value: "uid:0"}},
				Downstream: true,
			}},
		})
		check(b, err)
		svid := parent.mintFor(resp.Results[0].Entry.Id)
		up, err := downstream.New(context.Background(), downstream.Config{TrustDomain: td, ParentAddress: parent.addr,
			Source: staticSource{svid: svid, bundle: parent.bundle}})
		check(b, err)
		b.Cleanup(func() { up.Close() })
		return startServer(b, func(c *server.Config) { c.Parent = up; c.CATTL = 12 * time.Hour })
	}
	regional := down(root, "regional")
	leaf := down(regional, "leaf")
	rootIDs, leafIDs := root.seed(0, 50, 50), leaf.seed(0, 50, 50)
	csrs := make([][]byte, 200)
	for i := range csrs {
		_, csrs[i] = csr(b)
	}
	b.ResetTimer()
	var rootSum, leafSum float64
	for range 3 {
		rootSum += root.issueRate(rootIDs, csrs, 2*time.Second)
		leafSum += leaf.issueRate(leafIDs, csrs, 2*time.Second)
	}
	b.StopTimer()
	b.ReportMetric(rootSum/3, "root_svids/s")
	b.ReportMetric(leafSum/3, "leaf_svids/s")
	b.ReportMetric(leafSum/rootSum, "leaf/root")
}
