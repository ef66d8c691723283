package awspca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/acmpca/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
	"github.com/arborid/arbor/upstream/awspca"
	"github.com/arborid/arbor/upstream/internal/fakes"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func config(f *fakes.PCA) awspca.Config {
	return awspca.Config{
		TrustDomain: td, Region: f.Region, CertificateAuthorityARN: f.CAARN, Endpoint: f.Srv.URL,
		AccessKeyID: fakes.AccessKeyID, SecretAccessKey: fakes.SecretAccessKey,
		PollInterval: time.Millisecond, MaxPollInterval: 4 * time.Millisecond,
		RetryMaxAttempts: 1, CallTimeout: 10 * time.Second, WaitTimeout: 10 * time.Second,
		Now: f.Now,
	}
}

func newAuthority(t *testing.T, cfg awspca.Config) *awspca.Authority {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := awspca.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func mint(t *testing.T, a *awspca.Authority, ttl time.Duration) (*upstream.MintedCA, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return a.MintX509CA(ctx, upstreamtest.NewKey(t), ttl)
}

func TestMintX509CA(t *testing.T) {
	tests := []struct {
		name      string
		config    func(f *fakes.PCA, c *awspca.Config)
		fake      func(f *fakes.PCA)
		wantCalls []string
	}{
		{
			name: "issued at once",
			wantCalls: []string{
				"ACMPrivateCA.GetCertificateAuthorityCertificate", "ACMPrivateCA.IssueCertificate", "ACMPrivateCA.GetCertificate",
			},
		},
		{
			name: "request in progress, then issued",
			fake: func(f *fakes.PCA) { f.InProgress = 3 },
			wantCalls: []string{
				"ACMPrivateCA.GetCertificateAuthorityCertificate", "ACMPrivateCA.IssueCertificate",
				"ACMPrivateCA.GetCertificate", "ACMPrivateCA.GetCertificate", "ACMPrivateCA.GetCertificate", "ACMPrivateCA.GetCertificate",
			},
		},
		{
			name: "assume role",
			config: func(f *fakes.PCA, c *awspca.Config) {
				c.AssumeRoleARN, c.STSEndpoint = "arn:aws:iam::123456789012:role/arbor-ca", f.Srv.URL
			},
			fake: func(f *fakes.PCA) { f.PCACreds = "ASIAASSUMED" },
			wantCalls: []string{
				"STS.AssumeRole",
				"ACMPrivateCA.GetCertificateAuthorityCertificate", "ACMPrivateCA.IssueCertificate", "ACMPrivateCA.GetCertificate",
			},
		},
		{
			name: "explicit template and signing algorithm",
			config: func(f *fakes.PCA, c *awspca.Config) {
				c.TemplateARN, c.SigningAlgorithm = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen2/V1", "SHA384WITHECDSA"
			},
			fake: func(f *fakes.PCA) {
				f.WantTmpl, f.WantAlg = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen2/V1", "SHA384WITHECDSA"
			},
			wantCalls: []string{
				"ACMPrivateCA.GetCertificateAuthorityCertificate", "ACMPrivateCA.IssueCertificate", "ACMPrivateCA.GetCertificate",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := upstreamtest.NewClock(upstreamtest.Epoch)
			f := fakes.NewPCA(t, clock.Now)
			if tt.fake != nil {
				f.Set(tt.fake)
			}
			cfg := config(f)
			if tt.config != nil {
				tt.config(f, &cfg)
			}
			a := newAuthority(t, cfg)
			m, err := mint(t, a, 3*time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			if diff := cmp.Diff(tt.wantCalls, f.Calls()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if got, want := f.LastIssue.Validity.Value, clock.Now().Add(3*time.Hour).Unix(); got != want {
				t.Errorf("Validity.Value = %d, want %d (now+ttl, ABSOLUTE)", got, want)
			}
			if len(m.Roots) != 1 || !m.Roots[0].Equal(f.Root.Cert) {
				t.Errorf("roots = %v, want the PCA root", m.Roots)
			}
			if len(m.Intermediates) != 1 || !m.Intermediates[0].Equal(f.Issuer.Cert) {
				t.Errorf("intermediates = %v, want the private CA", m.Intermediates)
			}
			if len(m.Cert.URIs) != 1 || m.Cert.URIs[0].String() != "spiffe://example.org" {
				t.Errorf("URIs = %v", m.Cert.URIs)
			}
			if !m.Cert.NotAfter.Equal(clock.Now().Add(3 * time.Hour)) {
				t.Errorf("NotAfter = %v, want now+3h", m.Cert.NotAfter)
			}
		})
	}
}

func TestSupplementalBundle(t *testing.T) {
	clock := upstreamtest.NewClock(upstreamtest.Epoch)
	f := fakes.NewPCA(t, clock.Now)
	// The private CA publishes no chain above itself, so it becomes the
	// anchor; a supplemental bundle adds the root above it.
	f.Set(func(f *fakes.PCA) { f.NoRoot = true })
	extra := filepath.Join(t.TempDir(), "bundle.pem")
	upstreamtest.WriteFile(t, extra, upstreamtest.CertsPEM(f.Root.Cert))
	for _, tt := range []struct {
		name      string
		bundle    string
		wantRoots []string
	}{
		{"without bundle", "", []string{"pca subordinate"}},
		{"with bundle", extra, []string{"pca subordinate", "pca root"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(f)
			cfg.SupplementalBundleFile = tt.bundle
			m, err := mint(t, newAuthority(t, cfg), time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			var got []string
			for _, r := range m.Roots {
				got = append(got, r.Subject.CommonName)
			}
			if diff := cmp.Diff(tt.wantRoots, got); diff != "" {
				t.Errorf("roots (-want +got):\n%s", diff)
			}
			if len(m.Intermediates) != 0 {
				t.Errorf("intermediates = %d, want none (the private CA is an anchor)", len(m.Intermediates))
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		config   func(c *awspca.Config)
		fake     func(f *fakes.PCA)
		wantErr  error
		wantCode string
	}{
		{name: "IssueCertificate refused", fake: func(f *fakes.PCA) { f.IssueErr = "LimitExceededException" }, wantCode: "LimitExceededException"},
		{name: "unknown CA", config: func(c *awspca.Config) { c.CertificateAuthorityARN += "0" }, wantCode: "ResourceNotFoundException"},
		{name: "bad signature", config: func(c *awspca.Config) { c.SecretAccessKey = "wrong" }, wantCode: "InvalidSignatureException"},
		{name: "never issued", fake: func(f *fakes.PCA) { f.InProgress = 1 << 30 }, config: func(c *awspca.Config) { c.WaitTimeout = 50 * time.Millisecond }, wantErr: awspca.ErrNotIssued},
		{name: "chain does not verify", fake: func(f *fakes.PCA) { f.Defect = upstreamtest.ForeignChain }, wantErr: upstream.ErrChainInvalid},
		{name: "not a CA", fake: func(f *fakes.PCA) { f.Defect = upstreamtest.NotCA }, wantErr: upstream.ErrNotCA},
		{name: "lifetime too short", fake: func(f *fakes.PCA) { f.Defect = upstreamtest.ShortLife }, wantErr: upstream.ErrLifetimeTooShort},
		{name: "wrong trust domain", fake: func(f *fakes.PCA) { f.Defect = upstreamtest.WrongTD }, wantErr: upstream.ErrWrongTrustDomain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fakes.NewPCA(t, upstreamtest.NewClock(upstreamtest.Epoch).Now)
			if tt.fake != nil {
				f.Set(tt.fake)
			}
			cfg := config(f)
			if tt.config != nil {
				tt.config(&cfg)
			}
			_, err := mint(t, newAuthority(t, cfg), time.Hour)
			if err == nil {
				t.Fatal("MintX509CA succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantCode != "" {
				var ae smithy.APIError
				if !errors.As(err, &ae) || ae.ErrorCode() != tt.wantCode {
					t.Errorf("error = %v, want API error %s", err, tt.wantCode)
				}
			}
		})
	}
}

func TestSigningAlgorithmFor(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  any
		want types.SigningAlgorithm
	}{
		{"P-256", &p256.PublicKey, types.SigningAlgorithmSha256withecdsa},
		{"P-384", &p384.PublicKey, types.SigningAlgorithmSha384withecdsa},
		{"P-521", &p521.PublicKey, types.SigningAlgorithmSha512withecdsa},
		{"RSA", &r.PublicKey, types.SigningAlgorithmSha256withrsa},
	}
	for _, tt := range tests {
		if got, err := awspca.SigningAlgorithmFor(tt.pub); err != nil || got != tt.want {
			t.Errorf("SigningAlgorithmFor(%s) = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	if _, err := awspca.SigningAlgorithmFor("not a key"); err == nil {
		t.Error("SigningAlgorithmFor(string) succeeded")
	}
}

func TestConfigErrors(t *testing.T) {
	base := awspca.Config{TrustDomain: td, Region: "eu-west-1", CertificateAuthorityARN: "arn:x"}
	tests := []struct {
		name string
		mod  func(c *awspca.Config)
		want string
	}{
		{"no trust domain", func(c *awspca.Config) { c.TrustDomain = spiffeid.TrustDomain{} }, "trust domain is required"},
		{"no region", func(c *awspca.Config) { c.Region = "" }, "region is required"},
		{"no CA ARN", func(c *awspca.Config) { c.CertificateAuthorityARN = "" }, "certificate_authority_arn is required"},
		{"half credentials", func(c *awspca.Config) { c.AccessKeyID = "a" }, "go together"},
		{"bad algorithm", func(c *awspca.Config) { c.SigningAlgorithm = "MD5WITHRSA" }, "unknown signing_algorithm"},
		{"bad endpoint", func(c *awspca.Config) { c.Endpoint = "localhost" }, "not an absolute URL"},
		{"missing bundle", func(c *awspca.Config) { c.SupplementalBundleFile = "/nonexistent/bundle.pem" }, "supplemental_bundle_path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			if _, err := awspca.New(context.Background(), c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestManagerKeepsCurrentCA(t *testing.T) {
	for _, tt := range []struct {
		name    string
		breakIt func(f *fakes.PCA)
		wantErr error
	}{
		{"AWS unreachable", func(f *fakes.PCA) { f.Srv.Close() }, nil},
		{"IssueCertificate fails", func(f *fakes.PCA) { f.Set(func(f *fakes.PCA) { f.IssueErr = "InvalidStateException" }) }, nil},
		{"chain does not verify", func(f *fakes.PCA) { f.Set(func(f *fakes.PCA) { f.Defect = upstreamtest.ForeignChain }) }, upstream.ErrChainInvalid},
		{"lifetime too short", func(f *fakes.PCA) { f.Set(func(f *fakes.PCA) { f.Defect = upstreamtest.ShortLife }) }, upstream.ErrLifetimeTooShort},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := upstreamtest.NewClock(upstreamtest.Epoch)
			f := fakes.NewPCA(t, clock.Now)
			a := newAuthority(t, config(f))
			upstreamtest.Scenario{
				TrustDomain: td, Upstream: a, Clock: clock, CATTL: time.Hour, Root: f.Root.Cert,
				Break: func() { tt.breakIt(f) }, WantErr: tt.wantErr,
			}.KeepsCurrentCA(t)
		})
	}
}
