package e2e

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
)

// TestSpireServerNestedUnderArborFollowsTaint: a real spire-server nested
// under an arbor root (UpstreamAuthority "spire" through a co-located
// spire-agent) reacts to a forced rotation at the root, driven with the
// real spire-server CLI on arbor's admin socket: after prepare and activate
// its SVIDs still chain to the old root; after taint it gets an
// intermediate from the new root and its SVIDs chain to the new root
// alone; after revoke the old root is gone from its bundle. It reports the
// time from taint to the first SVID chaining to the new root, and from
// revoke to the old root leaving the nested bundle.
func TestSpireServerNestedUnderArborFollowsTaint(t *testing.T) {
	requireSetup(t)
	p := defaultSpire()
	root := newArbor(t, `datastore "sqlite" {}`)
	root.spire = p
	root.start(t)
	hostID := mustID(t, "/host/regional")
	agent := startAgent(t, root, root.generateToken(t, hostID))
	root.cli(t, "entry", "create", "-parentID", hostID.String(), "-spiffeID", mustID(t, "/tier/regional").String(),
		"-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "-downstream")
	nested := startSpireServer(t, p, root.port, agent.socket)

	mint := func() []*x509.Certificate {
		t.Helper()
		out := t.TempDir()
		nested.cli(t, "x509", "mint", "-spiffeID", mustID(t, "/nested/app").String(), "-write", out)
		return readPEMCerts(t, filepath.Join(out, "svid.pem"))
	}
	rootCert := func(id string) *x509.Certificate {
		t.Helper()
		certs, _ := root.bundlePEM(t)
		for _, c := range certs {
			if hex.EncodeToString(c.SubjectKeyId) == id {
				return c
			}
		}
		t.Fatalf("arbor's bundle has no authority %s", id)
		return nil
	}
	chainsTo := func(chain []*x509.Certificate, c *x509.Certificate) error {
		_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, []*x509.Certificate{c}))
		return err
	}

	var st localauthorityv1.GetX509AuthorityStateResponse
	root.cliJSON(t, &st, "localauthority", "x509", "show")
	oldID := st.GetActive().GetAuthorityId()
	oldRoot := rootCert(oldID)
	if err := chainsTo(mint(), oldRoot); err != nil {
		t.Fatalf("before the rotation the nested server's SVID does not chain to arbor's root: %v", err)
	}
	var prep localauthorityv1.PrepareX509AuthorityResponse
	root.cliJSON(t, &prep, "localauthority", "x509", "prepare")
	newID := prep.GetPreparedAuthority().GetAuthorityId()
	root.cli(t, "localauthority", "x509", "activate", "-authorityID", newID)
	newRoot := rootCert(newID)
	// Activation alone replaces nothing below: the old root is still trusted.
	if err := chainsTo(mint(), oldRoot); err != nil {
		t.Fatalf("after activate (no taint) the nested server's SVID no longer chains to the old root: %v", err)
	}

	root.cli(t, "localauthority", "x509", "taint", "-authorityID", oldID)
	taintedAt := time.Now()
	poll(t, 2*waitTimeout, "the nested spire-server signing under the new root", func() error {
		chain := mint()
		if err := chainsTo(chain, newRoot); err != nil {
			return err
		}
		if chainsTo(chain, oldRoot) == nil {
			return fmt.Errorf("SVID still chains to the tainted root")
		}
		return nil
	})
	replaced := time.Since(taintedAt)

	root.cli(t, "localauthority", "x509", "revoke", "-authorityID", oldID)
	revokedAt := time.Now()
	poll(t, 2*waitTimeout, "the revoked root leaving the nested spire-server's bundle", func() error {
		certs, _ := nested.bundlePEM(t)
		for _, c := range certs {
			if c.Equal(oldRoot) {
				return fmt.Errorf("nested bundle still holds the revoked root")
			}
		}
		return nil
	})
	gone := time.Since(revokedAt)
	if err := chainsTo(mint(), newRoot); err != nil {
		t.Errorf("after revoke the nested server's SVID does not chain to the new root: %v", err)
	}
	t.Logf("spire-server %s nested under arbor: taint -> SVIDs chaining to the new root only in %s; revoke -> old root out of its bundle in %s",
		p.version, replaced.Round(time.Millisecond), gone.Round(time.Millisecond))
}
