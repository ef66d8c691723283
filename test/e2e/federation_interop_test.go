package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestFederationWithSpireAcrossTrustDomains: an arbor tree of example.org
// (root, regional, leaf, run by `arbor up`) and a real spire-server of
// partner.test federate over each other's SPIFFE bundle endpoints, both with
// https_spiffe: arbor's root fetches the spire-server's endpoint (bootstrapped
// with its X.509 roots only, so its JWT keys can only have come through the
// endpoint) and hands the bundle down the tree; the spire-server fetches
// arbor's root endpoint. A workload under the arbor leaf (two tiers below the
// root) and a workload under a real spire-agent complete mTLS, each
// verifying the other's SVID against the federated bundle its agent gives
// it, and each side's agent validates the other side's JWT-SVID.
//
// Against the newest SPIRE release the tree runs with short CA lifetimes and
// the mTLS is checked every second until arbor's root has rotated three
// times (and every intermediate more often): no handshake may fail.
func TestFederationWithSpireAcrossTrustDomains(t *testing.T) {
	forEachSpire(t, func(t *testing.T, p *spirePeer) {
		rotations := 0
		if p == spirePeers[len(spirePeers)-1] {
			rotations = 3
		}
		testFederationWithSpire(t, p, rotations)
	})
}

// federatedPair is the two workloads of the cross-domain test.
type federatedPair struct {
	arborID, spireID     spiffeid.ID
	arborSock, spireSock string
	arborSrc, spireSrc   *workloadapi.X509Source
}

func testFederationWithSpire(t *testing.T, p *spirePeer, rotations int) {
	dir := shortTempDir(t, "fed")
	uid := os.Getuid()
	partner := spiffeid.RequireTrustDomainFromString(partnerTD)
	spireEndpoint, arborEndpoint := freePort(t), freePort(t)

	// partner.test: a real spire-server serving its bundle endpoint and
	// federated with example.org through arbor root's endpoint.
	s := startFederatedSpireServer(t, p, dir, nil, fmt.Sprintf(`federation {
    bundle_endpoint {
      address      = "127.0.0.1"
      port         = %d
      refresh_hint = "30s"
    }
    federates_with %q {
      bundle_endpoint_url = "https://127.0.0.1:%d"
      bundle_endpoint_profile "https_spiffe" {
        endpoint_spiffe_id = "spiffe://%s/spire/server"
      }
    }
  }`, spireEndpoint, td.Name(), arborEndpoint, td.Name()))
	partnerPEM := filepath.Join(dir, "partner.pem")
	if err := os.WriteFile(partnerPEM, []byte(s.mustCLI(t, "bundle", "show")), 0o600); err != nil {
		t.Fatal(err)
	}

	// example.org: root, regional and leaf. With rotations the lifetimes
	// are as short as the topology allows for a tree of this depth (each
	// child at most half its parent), so the root rotates every 100s.
	rootTTL, regionalTTL, leafTTL, svidTTL := "24h", "12h", "6h", "1h"
	if rotations > 0 {
		rootTTL, regionalTTL, leafTTL, svidTTL = "120s", "60s", "30s", "10s"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "trust_domain = %q\n\ndefaults {\n  x509_svid_ttl = %q\n  jwt_svid_ttl = %q\n  min_outage_budget = \"1s\"\n}\n", td.Name(), svidTTL, svidTTL)
	for _, srv := range []struct{ name, parent, ttl string }{{"root", "", rootTTL}, {"regional", "root", regionalTTL}, {"leaf", "regional", leafTTL}} {
		fmt.Fprintf(&b, "\nserver %q {\n  listen = \"127.0.0.1:%d\"\n  health_listen = \"off\"\n  state_dir = %q\n  ca_ttl = %q\n",
			srv.name, freePort(t), filepath.Join(dir, srv.name), srv.ttl)
		switch srv.name {
		case "root":
			fmt.Fprintf(&b, "  bundle_endpoint {\n    listen = \"127.0.0.1:%d\"\n    refresh_hint = \"10s\"\n  }\n", arborEndpoint)
		case "leaf":
			fmt.Fprintf(&b, "  entry \"federated\" {\n    spiffe_id = \"spiffe://%s/wl/leaf\"\n    parent_id = \"spiffe://%s/demo-node/leaf\"\n    selectors = [\"unix:uid:%d\"]\n    federates_with = [%q]\n  }\n",
				td.Name(), td.Name(), uid, partnerTD)
		}
		if srv.parent != "" {
			fmt.Fprintf(&b, "  parent = %q\n  agent {\n    node_attestor \"join_token\" {}\n  }\n", srv.parent)
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "\nfederation %q {\n  bundle_endpoint = \"https://127.0.0.1:%d\"\n  profile = \"https_spiffe\"\n  endpoint_spiffe_id = \"spiffe://%s/spire/server\"\n  bootstrap_bundle = %q\n}\n",
		partnerTD, spireEndpoint, partnerTD, partnerPEM)
	topo := filepath.Join(dir, "example-org.hcl")
	if err := os.WriteFile(topo, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	up := runUp(t, topo)
	root := &arborServer{adminSock: filepath.Join(dir, "root", "admin.sock"), spire: p}
	pair := &federatedPair{
		arborID:   spiffeid.RequireFromPath(td, "/wl/leaf"),
		spireID:   spiffeid.RequireFromPath(partner, "/wl"),
		arborSock: filepath.Join(dir, "leaf", "demo", "workload.sock"),
	}
	poll(t, 3*time.Minute, "the arbor leaf's workload holding "+pair.arborID.String(), func() error {
		if up.done() {
			t.Fatalf("arbor up exited early (%v):\n%s", up.err, tailString(up.out.String(), 40))
		}
		_, err := fetchSVIDOf(pair.arborSock, pair.arborID)
		return err
	})

	// The out-of-band exchange https_spiffe needs once: arbor's bundle to
	// the spire-server (arbor got partner.pem through bootstrap_bundle).
	_, arborPEM := root.bundlePEM(t)
	arborPEMPath := filepath.Join(dir, "arbor.pem")
	if err := os.WriteFile(arborPEMPath, arborPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s.mustCLI(t, "bundle", "set", "-format", "pem", "-id", td.ID().String(), "-path", arborPEMPath)
	s.mustCLI(t, "federation", "refresh", "-id", td.ID().String())

	spireNode := spiffeid.RequireFromPath(partner, "/node")
	out := s.mustCLI(t, "token", "generate", "-spiffeID", spireNode.String())
	token, ok := strings.CutPrefix(strings.TrimSpace(out), "Token: ")
	if !ok {
		t.Fatalf("spire-server token generate printed %q", out)
	}
	s.mustCLI(t, "entry", "create", "-parentID", spireNode.String(), "-spiffeID", pair.spireID.String(),
		"-selector", fmt.Sprintf("unix:uid:%d", uid), "-federatesWith", td.ID().String())
	spireWL := startSpireAgentOf(t, p, partnerTD, s.port, []byte(s.mustCLI(t, "bundle", "show")), token)
	pair.spireSock = spireWL.socket

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	pair.arborSrc = federatedSource(t, ctx, pair.arborSock, pair.arborID)
	pair.spireSrc = federatedSource(t, ctx, pair.spireSock, pair.spireID)

	// Each side's workload first holds the other trust domain's bundle.
	poll(t, 2*time.Minute, "each workload holding the other trust domain's bundle", func() error {
		if _, err := pair.arborSrc.GetX509BundleForTrustDomain(partner); err != nil {
			return fmt.Errorf("arbor leaf workload: %w", err)
		}
		if _, err := pair.spireSrc.GetX509BundleForTrustDomain(td); err != nil {
			return fmt.Errorf("spire-agent workload: %w", err)
		}
		return nil
	})
	lis := pair.listen(t, ctx)
	poll(t, time.Minute, "cross-domain mTLS", func() error { return pair.handshake(ctx, lis.Addr().String()) })
	// JWT both ways. The spire-server's JWT keys reach the arbor leaf only
	// through the bundle endpoint arbor's root fetched.
	poll(t, 2*time.Minute, "the arbor leaf's agent validating partner.test's JWT-SVID", func() error {
		return validateAcross(ctx, pair.spireSock, pair.spireID, pair.arborSock, "arbor-audience")
	})
	poll(t, 2*time.Minute, "spire-agent validating the arbor leaf's JWT-SVID", func() error {
		return validateAcross(ctx, pair.arborSock, pair.arborID, pair.spireSock, "partner-audience")
	})
	if rotations == 0 {
		foreignChangeReachesLeaf(t, s, pair, partner)
		return
	}

	// Rotation: a handshake every second until the arbor workload's SVID has
	// chained to four roots (three rotations), each handshake verifying both
	// sides; and partner.test's JWT-SVIDs validated by the arbor leaf's agent
	// throughout.
	roots := map[string]bool{}
	inters := map[string]bool{}
	var failures []string
	start := time.Now()
	checks := 0
	deadline := time.Now().Add(time.Duration(rotations+1) * 110 * time.Second)
	for len(roots) < rotations+1 {
		if time.Now().After(deadline) {
			t.Fatalf("after %v the arbor workload's SVIDs chained to %d root(s), want %d (root ca_ttl %s)\n%s",
				time.Since(start).Round(time.Second), len(roots), rotations+1, rootTTL, tailString(up.out.String(), 20))
		}
		if up.done() {
			t.Fatalf("arbor up exited (%v):\n%s", up.err, tailString(up.out.String(), 40))
		}
		svid, err := pair.arborSrc.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		top := svid.Certificates[len(svid.Certificates)-1]
		roots[string(top.AuthorityKeyId)] = true
		if len(svid.Certificates) > 1 {
			inters[string(svid.Certificates[1].SubjectKeyId)] = true
		}
		checks++
		if err := pair.handshake(ctx, lis.Addr().String()); err != nil {
			failures = append(failures, fmt.Sprintf("%v mTLS: %v", time.Since(start).Round(time.Second), err))
		}
		if checks%5 == 0 {
			if err := validateAcross(ctx, pair.spireSock, pair.spireID, pair.arborSock, "arbor-audience"); err != nil {
				failures = append(failures, fmt.Sprintf("%v JWT partner.test→arbor: %v", time.Since(start).Round(time.Second), err))
			}
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d checks over %v: the arbor workload's SVIDs chained to %d roots through %d leaf intermediates",
		checks, time.Since(start).Round(time.Second), len(roots), len(inters))
	if len(failures) > 0 {
		t.Fatalf("%d of %d cross-domain checks failed while arbor rotated:\n%s", len(failures), checks, strings.Join(failures, "\n"))
	}
	// After the rotations arbor's current JWT key reaches the spire-server
	// at its own refresh pace (at best every 15s: SPIRE polls at a quarter
	// of a refresh hint of at least a minute).
	poll(t, 2*time.Minute, "spire-agent validating the rotated arbor leaf's JWT-SVID", func() error {
		return validateAcross(ctx, pair.arborSock, pair.arborID, pair.spireSock, "partner-audience")
	})
}

// foreignChangeReachesLeaf prepares a new X.509 authority on the
// spire-server (it is published in its bundle at once) and measures how long
// it takes to reach the workload under the arbor leaf: arbor's root fetches
// it at the endpoint's refresh hint (30s), the regional and the leaf take it
// in their parent bundle sync (10s each), the leaf's agent in its sync (5s).
func foreignChangeReachesLeaf(t *testing.T, s *agentSpireServer, pair *federatedPair, partner spiffeid.TrustDomain) {
	t.Helper()
	held := map[string]bool{}
	b, err := pair.arborSrc.GetX509BundleForTrustDomain(partner)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b.X509Authorities() {
		held[string(c.Raw)] = true
	}
	s.mustCLI(t, "localauthority", "x509", "prepare")
	start := time.Now()
	poll(t, 3*time.Minute, "partner.test's prepared authority reaching the arbor leaf's workload", func() error {
		b, err := pair.arborSrc.GetX509BundleForTrustDomain(partner)
		if err != nil {
			return err
		}
		for _, c := range b.X509Authorities() {
			if !held[string(c.Raw)] {
				return nil
			}
		}
		return fmt.Errorf("the workload holds %d authorities of %s, none new", len(b.X509Authorities()), partner)
	})
	t.Logf("a new authority at partner.test's endpoint reached the workload two tiers below arbor's root in %v (bound: refresh hint 30s + 2 × 10s parent bundle sync + 5s agent sync = 55s)",
		time.Since(start).Round(time.Second))
}

// fetchSVIDOf returns the X509-SVID id from the Workload API at socket.
func fetchSVIDOf(socket string, id spiffeid.ID) (*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range svids {
		if s.ID == id {
			return s, nil
		}
		ids = append(ids, s.ID.String())
	}
	return nil, fmt.Errorf("the workload holds %v, not %s", ids, id)
}

// federatedSource is an X509Source at socket whose default SVID is id (the
// test process also matches the demo workload's entry on arbor's side).
func federatedSource(t *testing.T, ctx context.Context, socket string, id spiffeid.ID) *workloadapi.X509Source {
	t.Helper()
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == id {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// listen serves mTLS as the partner.test workload, accepting only the arbor
// workload, answering "ping!" with "pong!".
func (fp *federatedPair) listen(t *testing.T, ctx context.Context) net.Listener {
	t.Helper()
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
		spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(fp.arborID), fp.spireSrc))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "ping!" {
					c.Write([]byte("pong!"))
				}
			})
		}
	})
	return lis
}

// handshake dials the partner.test workload as the arbor workload: both
// sides verify each other's SVID against their federated bundles.
func (fp *federatedPair) handshake(ctx context.Context, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := spiffetls.DialWithMode(dctx, "tcp", addr,
		spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(fp.spireID), fp.arborSrc))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping!")); err != nil {
		return err
	}
	reply := make([]byte, 5)
	if _, err := io.ReadFull(conn, reply); err != nil {
		// The server side closes without replying when it refused us.
		return fmt.Errorf("no reply (the partner side refused the handshake?): %w", err)
	}
	if !bytes.Equal(reply, []byte("pong!")) {
		return fmt.Errorf("reply %q", reply)
	}
	return nil
}

// validateAcross fetches a JWT-SVID for id from the Workload API at from and
// has the agent at to validate it for audience.
func validateAcross(ctx context.Context, from string, id spiffeid.ID, to, audience string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := workloadapi.FetchJWTSVID(cctx, jwtsvid.Params{Audience: audience, Subject: id}, workloadapi.WithAddr("unix://"+from))
	if err != nil {
		return fmt.Errorf("fetching the JWT-SVID: %w", err)
	}
	got, err := workloadapi.ValidateJWTSVID(cctx, tok.Marshal(), audience, workloadapi.WithAddr("unix://"+to))
	if err != nil {
		return fmt.Errorf("validating %s's JWT-SVID: %w", id, err)
	}
	if got.ID != id {
		return fmt.Errorf("validated JWT-SVID names %s, want %s", got.ID, id)
	}
	return nil
}
