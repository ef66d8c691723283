package awspca_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/upstream/internal/fakes"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

const (
	getCA = "ACMPrivateCA.GetCertificateAuthorityCertificate"
	issue = "ACMPrivateCA.IssueCertificate"
	get   = "ACMPrivateCA.GetCertificate"
)

// TestCACertificateCache: the private CA's certificate is read once and
// reused while it is valid and still the issuer, so a rotation costs two
// round trips; a failed mint, a re-imported CA certificate and an expired
// one make the next mint read it again, and a root the CA no longer chains
// to never reaches the bundle.
func TestCACertificateCache(t *testing.T) {
	type step struct {
		before    func(f *fakes.PCA, clock *upstreamtest.Clock)
		wantCalls []string
		wantErr   bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "second mint reuses the CA certificate",
			steps: []step{
				{wantCalls: []string{getCA, issue, get}},
				{wantCalls: []string{issue, get}},
				{wantCalls: []string{issue, get}},
			},
		},
		{
			name: "a failed mint drops the cache",
			steps: []step{
				{wantCalls: []string{getCA, issue, get}},
				{before: func(f *fakes.PCA, _ *upstreamtest.Clock) {
					f.Set(func(f *fakes.PCA) { f.IssueErr = "ThrottlingException" })
				}, wantCalls: []string{issue}, wantErr: true},
				{before: func(f *fakes.PCA, _ *upstreamtest.Clock) { f.Set(func(f *fakes.PCA) { f.IssueErr = "" }) }, wantCalls: []string{getCA, issue, get}},
			},
		},
		{
			name: "a refused certificate drops the cache",
			steps: []step{
				{wantCalls: []string{getCA, issue, get}},
				{before: func(f *fakes.PCA, _ *upstreamtest.Clock) {
					f.Set(func(f *fakes.PCA) { f.Defect = upstreamtest.WrongTD })
				}, wantCalls: []string{issue, get}, wantErr: true},
				{before: func(f *fakes.PCA, _ *upstreamtest.Clock) { f.Set(func(f *fakes.PCA) { f.Defect = upstreamtest.Good }) }, wantCalls: []string{getCA, issue, get}},
			},
		},
		{
			name: "CA re-imported under a new root",
			steps: []step{
				{wantCalls: []string{getCA, issue, get}},
				// The issued certificate names the new CA certificate: only
				// GetCertificate's chain counts, so the old root is gone.
				{before: func(f *fakes.PCA, _ *upstreamtest.Clock) { f.ReissueCA() }, wantCalls: []string{issue, get}},
				{wantCalls: []string{getCA, issue, get}},
				{wantCalls: []string{issue, get}},
			},
		},
		{
			name: "cached CA certificate expired",
			steps: []step{
				{wantCalls: []string{getCA, issue, get}},
				{before: func(f *fakes.PCA, clock *upstreamtest.Clock) {
					clock.Add(500 * time.Hour) // past the private CA's NotAfter
					f.ReissueCA()              // ... which the operator renewed
				}, wantCalls: []string{getCA, issue, get}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := upstreamtest.NewClock(upstreamtest.Epoch)
			f := fakes.NewPCA(t, clock.Now)
			a := newAuthority(t, config(f))
			for i, s := range tt.steps {
				if s.before != nil {
					s.before(f, clock)
				}
				f.Reset()
				m, err := mint(t, a, time.Hour)
				if diff := cmp.Diff(s.wantCalls, f.Calls()); diff != "" {
					t.Errorf("mint %d: calls (-want +got):\n%s", i+1, diff)
				}
				if s.wantErr {
					if err == nil {
						t.Errorf("mint %d succeeded, want an error", i+1)
					}
					continue
				}
				if err != nil {
					t.Fatalf("mint %d: %v", i+1, err)
				}
				if root := f.CurrentRoot(); len(m.Roots) != 1 || !m.Roots[0].Equal(root) {
					t.Errorf("mint %d: roots %v, want only the current root %q", i+1, names(m.Roots), root.Subject.CommonName)
				}
			}
		})
	}
}

func names(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}
