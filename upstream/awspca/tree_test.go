package awspca_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/upstream/awspca"
	"github.com/arborid/arbor/upstream/internal/fakes"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

// TestTreeChainsToPCARoot: a root tier whose CA AWS Private CA issues
// (through the real SDK, the request in progress once), two tiers below it,
// and a workload SVID from the leaf verifies against the PCA's root alone,
// with the private CA in the SVID's chain.
func TestTreeChainsToPCARoot(t *testing.T) {
	f := fakes.NewPCA(t, nil) // real time: the tiers talk TLS
	f.Set(func(f *fakes.PCA) { f.InProgress = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := awspca.New(ctx, awspca.Config{
		TrustDomain: td, Region: f.Region, CertificateAuthorityARN: f.CAARN, Endpoint: f.Srv.URL,
		AccessKeyID: fakes.AccessKeyID, SecretAccessKey: fakes.SecretAccessKey,
		PollInterval: time.Millisecond, MaxPollInterval: 4 * time.Millisecond, RetryMaxAttempts: 1,
	})
	if err != nil {
		t.Fatalf("awspca.New: %v", err)
	}
	upstreamtest.TreeChainsToRoot(t, td, a, f.Root.Cert, []*x509.Certificate{f.Issuer.Cert})
	want := []string{
		"ACMPrivateCA.GetCertificateAuthorityCertificate", "ACMPrivateCA.IssueCertificate",
		"ACMPrivateCA.GetCertificate", "ACMPrivateCA.GetCertificate",
	}
	if diff := cmp.Diff(want, f.Calls()); diff != "" {
		t.Errorf("only the root tier's CA goes through the PCA; calls (-want +got):\n%s", diff)
	}
}
