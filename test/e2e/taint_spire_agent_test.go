package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
)

// TestSpireAgentRemintsOnTaint: a real spire-agent attested to arbor serves
// a go-spiffe workload; the operator (spire-server localauthority) prepares
// and activates a new X.509 CA and taints the old one: spire-agent, reading
// the tainted flag from arbor's GetBundle, re-mints the workload's SVID from
// the new CA well before its half-life; after the revoke the old CA leaves
// the workload's bundle. Against every SPIRE release.
func TestSpireAgentRemintsOnTaint(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	forEachSpire(t, func(t *testing.T, p *spirePeer) {
		a := newArbor(t, `datastore "sqlite" {}`)
		a.spire = p
		a.start(t)
		hostID, workloadID := mustID(t, "/host"), mustID(t, "/workload")
		ag := startAgent(t, a, a.generateToken(t, hostID))
		a.createEntry(t, hostID, workloadID, "unix:uid:"+strconv.Itoa(os.Getuid()))
		first := ag.waitX509SVID(t, workloadID)

		var st localauthorityv1.GetX509AuthorityStateResponse
		a.cliJSON(t, &st, "localauthority", "x509", "show")
		oldID := st.GetActive().GetAuthorityId()
		var prep localauthorityv1.PrepareX509AuthorityResponse
		a.cliJSON(t, &prep, "localauthority", "x509", "prepare")
		newID := prep.GetPreparedAuthority().GetAuthorityId()
		var newRoot *x509.Certificate
		poll(t, waitTimeout, "the prepared CA in the workload's bundle", func() error {
			newRoot = bundleAuthority(t, ag, newID)
			if newRoot == nil {
				return fmt.Errorf("no authority %s yet", newID)
			}
			return nil
		})
		a.cli(t, "localauthority", "x509", "activate", "-authorityID", newID)
		a.cli(t, "localauthority", "x509", "taint", "-authorityID", oldID)
		tainted := time.Now()
		var renewed *x509svid.SVID
		poll(t, waitTimeout, "spire-agent re-minting the workload SVID from the new CA", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := workloadapi.FetchX509SVID(ctx, ag.addr())
			if err != nil {
				return err
			}
			if s.Certificates[0].Equal(first.Certificates[0]) {
				return fmt.Errorf("still the SVID signed by the tainted CA")
			}
			renewed = s
			return nil
		})
		t.Logf("%s: taint to re-minted workload SVID %v (the SVID lives 1h; spire-agent syncs every 5s)", p.version, time.Since(tainted).Round(100*time.Millisecond))
		if halfLife := first.Certificates[0].NotBefore.Add(first.Certificates[0].NotAfter.Sub(first.Certificates[0].NotBefore) / 2); !time.Now().Before(halfLife) {
			t.Fatal("the test ran past the first SVID's half-life; the re-mint proves nothing")
		}
		if !signedBy(renewed.Certificates, newRoot) {
			t.Fatalf("the re-minted SVID is not signed by the new CA %s", newID)
		}
		a.cli(t, "localauthority", "x509", "revoke", "-authorityID", oldID)
		poll(t, waitTimeout, "the revoked CA leaving the workload's bundle", func() error {
			if bundleAuthority(t, ag, oldID) != nil {
				return fmt.Errorf("the workload's bundle still holds %s", oldID)
			}
			return nil
		})
	})
}

// bundleAuthority is the workload's own-trust-domain X.509 authority whose
// subject key ID is id, or nil.
func bundleAuthority(t *testing.T, ag *spireAgent, id string) *x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	set, err := workloadapi.FetchX509Bundles(ctx, ag.addr())
	if err != nil {
		return nil
	}
	b, err := set.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil
	}
	for _, c := range b.X509Authorities() {
		if skidHex(t, c.Raw) == id {
			return c
		}
	}
	return nil
}

func signedBy(chain []*x509.Certificate, root *x509.Certificate) bool {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}
