package upstreamtest_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/upstream"
	"github.com/arborid/arbor/upstream/awspca"
	"github.com/arborid/arbor/upstream/disk"
	"github.com/arborid/arbor/upstream/internal/fakes"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
	"github.com/arborid/arbor/upstream/vault"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// coldStartKind is one way for a root tier to get its CA.
type coldStartKind struct {
	name string
	// root is the trust anchor the first SVID must verify against; nil
	// means the tier's own (self-signed) CA.
	root *x509.Certificate
	// upstream builds a fresh adapter (nil: self-signed), as a restarted
	// server does; building it is not part of the measured time.
	upstream func(b *testing.B) upstream.Authority
	// calls returns the requests the external authority served since the
	// last reset, and resets; nil for kinds without one.
	calls func() []string

	n                      int
	total, newTook, mint   time.Duration
	coldCalls, rotateCalls int
	callNames              string
}

// BenchmarkColdStart starts a root tier again and again — self-signed, disk,
// Vault (fake, static token and AppRole) and AWS Private CA (fake) — in
// rotating order inside one run, and reports for each the mean time from
// server.New to the first X509-SVID an agent receives (and the part of it
// spent in server.New, where the CA is minted through the adapter), the
// ratio of that time to self-signed, the upstream round trips of the cold
// start's mint and of a later rotation's mint, and how long that rotation's
// mint took (the adapter alone, connection warm).
//
//	go test -run '^$' -bench ColdStart -benchtime 20x ./upstream/internal/upstreamtest
func BenchmarkColdStart(b *testing.B) {
	dir := b.TempDir()
	now := time.Now()
	enterprise := upstreamtest.NewRoot(b, "enterprise root", now, 1000*time.Hour)
	issuing := enterprise.NewIntermediate(b, "enterprise issuing CA", now, 500*time.Hour)
	diskCfg := disk.Config{TrustDomain: td, CertFile: filepath.Join(dir, "ca.pem"), KeyFile: filepath.Join(dir, "ca.key"), BundleFile: filepath.Join(dir, "bundle.pem")}
	upstreamtest.WriteFile(b, diskCfg.CertFile, upstreamtest.CertsPEM(issuing.Cert))
	upstreamtest.WriteFile(b, diskCfg.KeyFile, upstreamtest.KeyPEM(b, issuing.Key))
	upstreamtest.WriteFile(b, diskCfg.BundleFile, upstreamtest.CertsPEM(enterprise.Cert))

	fv := fakes.NewVault(b, nil, nil)
	vaultCA := filepath.Join(dir, "vault-ca.pem")
	upstreamtest.WriteFile(b, vaultCA, fv.ServerCAPEM())
	vaultCalls := func() []string { c := fv.Calls(); fv.Reset(); return c }
	fp := fakes.NewPCA(b, nil)
	pcaCalls := func() []string { c := fp.Calls(); fp.Reset(); return c }

	newVault := func(auth func(c *vault.Config)) func(b *testing.B) upstream.Authority {
		return func(b *testing.B) upstream.Authority {
			c := vault.Config{TrustDomain: td, Address: fv.Srv.URL, CACertFile: vaultCA}
			auth(&c)
			a, err := vault.New(c)
			if err != nil {
				b.Fatal(err)
			}
			return a
		}
	}
	kinds := []*coldStartKind{
		{name: "self-signed"},
		{name: "disk", root: enterprise.Cert, upstream: func(b *testing.B) upstream.Authority {
			a, err := disk.New(diskCfg)
			if err != nil {
				b.Fatal(err)
			}
			return a
		}},
		{name: "vault-token", root: fv.Root.Cert, calls: vaultCalls, upstream: newVault(func(c *vault.Config) { c.Token = fakes.StaticToken })},
		{name: "vault-approle", root: fv.Root.Cert, calls: vaultCalls, upstream: newVault(func(c *vault.Config) {
			c.AppRole = &vault.AppRole{RoleID: fv.RoleID, SecretID: fv.SecretID}
		})},
		{name: "aws_pca", root: fp.Root.Cert, calls: pcaCalls, upstream: func(b *testing.B) upstream.Authority {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err := awspca.New(ctx, awspca.Config{
				TrustDomain: td, Region: fp.Region, CertificateAuthorityARN: fp.CAARN, Endpoint: fp.Srv.URL,
				AccessKeyID: fakes.AccessKeyID, SecretAccessKey: fakes.SecretAccessKey,
			})
			if err != nil {
				b.Fatal(err)
			}
			return a
		}},
	}

	// One unrecorded round first: the first server in a process pays for
	// lazy initialization (TLS, SQLite, the SDKs) whichever kind it is.
	for _, k := range kinds {
		coldStart(b, k)
		*k = coldStartKind{name: k.name, root: k.root, upstream: k.upstream, calls: k.calls}
	}
	for i := 0; b.Loop(); i++ {
		for j := range kinds {
			coldStart(b, kinds[(i+j)%len(kinds)])
		}
	}

	base := kinds[0]
	mean := func(k *coldStartKind, d time.Duration) float64 {
		return float64(d.Microseconds()) / 1000 / float64(k.n)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-14s %13s %8s %7s %8s %11s %8s  %s\n", "upstream", "first SVID ms", "New ms", "ratio", "RT cold", "RT rotation", "mint ms", "cold-start calls")
	for _, k := range kinds {
		ratio := float64(k.total) / float64(k.n) / (float64(base.total) / float64(base.n))
		b.ReportMetric(mean(k, k.total), k.name+"-ms")
		b.ReportMetric(ratio, k.name+"/self")
		b.ReportMetric(float64(k.coldCalls), k.name+"-rt-cold")
		b.ReportMetric(float64(k.rotateCalls), k.name+"-rt-rotate")
		fmt.Fprintf(&table, "%-14s %13.1f %8.1f %6.2fx %8d %11d %8.2f  %s\n", k.name, mean(k, k.total), mean(k, k.newTook), ratio, k.coldCalls, k.rotateCalls, mean(k, k.mint), k.callNames)
	}
	b.Log(table.String())
}

// coldStart starts a root tier of kind k in a fresh state directory,
// attests an agent and checks its X509-SVID chains to k's root, then has the
// same adapter mint once more as a rotation would, counting round trips.
func coldStart(b *testing.B, k *coldStartKind) {
	var up upstream.Authority
	if k.upstream != nil {
		up = k.upstream(b)
	}
	if k.calls != nil {
		k.calls()
	}
	start := time.Now()
	tier := upstreamtest.StartTier(b, server.Config{Name: k.name, TrustDomain: td, Upstream: up})
	svid := tier.NewAgent(b)
	k.total += time.Since(start)
	k.newTook += tier.NewTook
	k.n++

	root := k.root
	if root == nil {
		root, _ = tier.Server.CA().X509CA()
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{root})); err != nil {
		b.Fatalf("%s: first SVID does not chain to %q: %v", k.name, root.Subject, err)
	}
	if k.calls != nil {
		calls := k.calls()
		k.coldCalls, k.callNames = len(calls), shortNames(calls)
	}
	if up != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		key := upstreamtest.NewKey(b)
		mintStart := time.Now()
		_, err := up.MintX509CA(ctx, key, 24*time.Hour)
		k.mint += time.Since(mintStart)
		cancel()
		if err != nil {
			b.Fatalf("%s: rotation mint: %v", k.name, err)
		}
		if k.calls != nil {
			k.rotateCalls = len(k.calls())
		}
	}
	if err := tier.Stop(); err != nil {
		b.Fatal(err)
	}
	if c, ok := up.(interface{ Close() error }); ok {
		c.Close()
	}
}

// shortNames drops the protocol noise from the fakes' call records.
func shortNames(calls []string) string {
	out := make([]string, len(calls))
	for i, c := range calls {
		c = strings.TrimPrefix(c, "ACMPrivateCA.")
		c = strings.TrimPrefix(c, "PUT ")
		out[i] = c
	}
	return strings.Join(out, ", ")
}
