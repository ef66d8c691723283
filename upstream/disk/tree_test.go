package disk_test

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborid/arbor/upstream/disk"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

// TestTreeChainsToEnterpriseRoot: a root tier signed from CA files, two
// tiers below it, and a workload SVID from the leaf verifies against the
// enterprise root alone, with the files' chain in the SVID's chain.
func TestTreeChainsToEnterpriseRoot(t *testing.T) {
	// Real time: the tiers talk TLS, which checks validity at time.Now.
	now := time.Now()
	root := upstreamtest.NewRoot(t, "enterprise root", now, 1000*time.Hour)
	inter := root.NewIntermediate(t, "enterprise issuing CA", now, 500*time.Hour)
	tests := []struct {
		name          string
		signer        *upstreamtest.CA
		bundle        []*x509.Certificate // BundleFile content; nil means none
		intermediates []*x509.Certificate // expected at the end of the SVID chain
	}{
		{name: "files hold the root itself", signer: root},
		{name: "files hold an issuing CA, bundle the root", signer: inter, bundle: []*x509.Certificate{root.Cert}, intermediates: []*x509.Certificate{inter.Cert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := disk.Config{TrustDomain: td, CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "ca.key")}
			upstreamtest.WriteFile(t, cfg.CertFile, upstreamtest.CertsPEM(tt.signer.Cert))
			upstreamtest.WriteFile(t, cfg.KeyFile, upstreamtest.KeyPEM(t, tt.signer.Key))
			if tt.bundle != nil {
				cfg.BundleFile = filepath.Join(dir, "bundle.pem")
				upstreamtest.WriteFile(t, cfg.BundleFile, upstreamtest.CertsPEM(tt.bundle...))
			}
			a, err := disk.New(cfg)
			if err != nil {
				t.Fatalf("disk.New: %v", err)
			}
			upstreamtest.TreeChainsToRoot(t, td, a, root.Cert, tt.intermediates)
		})
	}
}
