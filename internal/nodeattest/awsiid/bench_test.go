package awsiid_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
)

// rsaVerifyRate measures raw RSA-2048 PKCS #1 v1.5 verifications per
// second with the test signer's key: the floor of what one attestation
// costs in CPU.
func rsaVerifyRate(b *testing.B) float64 {
	s := loadSigner(b, "signer.pem")
	sum := sha256.Sum256([]byte("baseline"))
	sig := must(rsa.SignPKCS1v15(nil, s.Key, crypto.SHA256, sum[:]))
	const n = 2000
	start := time.Now()
	for range n {
		if err := rsa.VerifyPKCS1v15(&s.Key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
			b.Fatal(err)
		}
	}
	return n / time.Since(start).Seconds()
}

// BenchmarkAttest runs full attestations against the fakes (TLS on
// loopback, DescribeInstances and GetInstanceProfile each signed and
// checked) and reports attestations per second and their ratio to the raw
// RSA verification rate measured in the same run. "cached" is one
// Attestor, as a server keeps it; "new-attestor" builds one per
// attestation, parsing the 36 certificates and building the SDK clients
// each time, which is what the caches save.
func BenchmarkAttest(b *testing.B) {
	f := newFixture(b)
	p := payload(b, f.signer, testDocument().JSON())
	ctx := testContext(b)
	baseline := rsaVerifyRate(b)

	b.Run("cached", func(b *testing.B) {
		a := f.attestor(b, nil)
		if _, err := a.Attest(ctx, p, noChallenge); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		for b.Loop() {
			if _, err := a.Attest(ctx, p, noChallenge); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start, baseline)
		if n := a.ClientsBuilt(); n != 1 {
			b.Errorf("client sets built = %d, want 1", n)
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		a := f.attestor(b, nil)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := a.Attest(ctx, p, noChallenge); err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b, start, baseline)
	})
	b.Run("new-attestor", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			a := f.attestor(b, nil)
			if _, err := a.Attest(ctx, p, noChallenge); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start, baseline)
	})
	b.Run("verify-only", func(b *testing.B) {
		a := f.attestor(b, nil)
		start := time.Now()
		for b.Loop() {
			if _, _, err := a.VerifyPayload(p); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start, baseline)
	})
}

func report(b *testing.B, start time.Time, baseline float64) {
	rate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "attest/s")
	b.ReportMetric(baseline, "rsa-verify/s")
	b.ReportMetric(rate/baseline, "ratio")
}

// TestAttestConcurrentFirstUse: a burst of concurrent first attestations
// for one account and region builds one set of clients.
func TestAttestConcurrentFirstUse(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, func(c *awsiid.Config) { c.AssumeRole = "delegate" })
	p := payload(t, f.signer, testDocument().JSON())
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := a.Attest(ctx, p, noChallenge); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := a.ClientsBuilt(); n != 1 {
		t.Errorf("client sets built = %d, want 1", n)
	}
	var assumed int
	for _, c := range f.aws.Calls() {
		if c.Action == "AssumeRole" {
			assumed++
		}
	}
	if assumed != 1 {
		t.Errorf("AssumeRole calls = %d, want 1 for 16 concurrent attestations", assumed)
	}
}
