package vault_test

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/upstream/internal/fakes"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
	"github.com/arborid/arbor/upstream/vault"
)

// TestTreeChainsToVaultRoot: a root tier whose CA Vault signs (AppRole
// login, pki/root/sign-intermediate through the real vault/api client), two
// tiers below it, and a workload SVID from the leaf verifies against Vault's
// root alone, with Vault's issuing CA in the SVID's chain.
func TestTreeChainsToVaultRoot(t *testing.T) {
	f := fakes.NewVault(t, nil, nil) // real time: the tiers talk TLS
	caFile := filepath.Join(t.TempDir(), "vault-ca.pem")
	upstreamtest.WriteFile(t, caFile, f.ServerCAPEM())
	a, err := vault.New(vault.Config{
		TrustDomain: td, Address: f.Srv.URL, CACertFile: caFile,
		AppRole: &vault.AppRole{RoleID: f.RoleID, SecretID: f.SecretID}, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("vault.New: %v", err)
	}
	upstreamtest.TreeChainsToRoot(t, td, a, f.Root.Cert, []*x509.Certificate{f.Issuer.Cert})
	// Only the root tier talks to Vault, once to log in and once to sign.
	want := []string{"PUT auth/approle/login", "PUT pki/root/sign-intermediate"}
	if diff := cmp.Diff(want, f.Calls()); diff != "" {
		t.Errorf("Vault calls (-want +got):\n%s", diff)
	}
}
