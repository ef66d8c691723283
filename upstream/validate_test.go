package upstream_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

func TestValidate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	now := upstreamtest.Epoch
	root := upstreamtest.NewRoot(t, "root", now, 100*time.Hour)
	inter := root.NewIntermediate(t, "inter", now, 50*time.Hour)
	other := upstreamtest.NewRoot(t, "other", now, 100*time.Hour)
	key := upstreamtest.NewKey(t)
	uris := []*url.URL{{Scheme: "spiffe", Host: "example.org"}}
	subject := pkix.Name{CommonName: "tier"}
	sign := func(d upstreamtest.Defect) *x509.Certificate {
		return inter.SignCA(t, key.Public(), subject, uris, now, time.Hour, d)
	}
	good := sign(upstreamtest.Good)
	noURI := inter.SignCA(t, key.Public(), subject, nil, now, time.Hour, upstreamtest.Good)
	slightlyShort := inter.SignCA(t, key.Public(), subject, uris, now, 40*time.Minute, upstreamtest.Good)
	chain := []*x509.Certificate{inter.Cert}
	roots := []*x509.Certificate{root.Cert}
	tests := []struct {
		name        string
		minted      *upstream.MintedCA
		key         any
		wantErr     error
		wantGranted time.Duration
	}{
		{"good", &upstream.MintedCA{Cert: good, Intermediates: chain, Roots: roots}, key.Public(), nil, time.Hour},
		{"no URI SAN", &upstream.MintedCA{Cert: noURI, Intermediates: chain, Roots: roots}, key.Public(), nil, time.Hour},
		{"shorter but acceptable", &upstream.MintedCA{Cert: slightlyShort, Intermediates: chain, Roots: roots}, key.Public(), nil, 40 * time.Minute},
		{"intermediate as anchor", &upstream.MintedCA{Cert: good, Roots: chain}, key.Public(), nil, time.Hour},
		{"nil", nil, key.Public(), upstream.ErrNoCertificate, 0},
		{"no roots", &upstream.MintedCA{Cert: good, Intermediates: chain}, key.Public(), upstream.ErrNoRoots, 0},
		{"other key", &upstream.MintedCA{Cert: good, Intermediates: chain, Roots: roots}, upstreamtest.NewKey(t).Public(), upstream.ErrKeyMismatch, 0},
		{"not a CA", &upstream.MintedCA{Cert: sign(upstreamtest.NotCA), Intermediates: chain, Roots: roots}, key.Public(), upstream.ErrNotCA, 0},
		{"wrong trust domain", &upstream.MintedCA{Cert: sign(upstreamtest.WrongTD), Intermediates: chain, Roots: roots}, key.Public(), upstream.ErrWrongTrustDomain, 0},
		{"foreign chain", &upstream.MintedCA{Cert: sign(upstreamtest.ForeignChain), Intermediates: chain, Roots: roots}, key.Public(), upstream.ErrChainInvalid, 0},
		{"wrong roots", &upstream.MintedCA{Cert: good, Intermediates: chain, Roots: []*x509.Certificate{other.Cert}}, key.Public(), upstream.ErrChainInvalid, 0},
		{"missing intermediate", &upstream.MintedCA{Cert: good, Roots: roots}, key.Public(), upstream.ErrChainInvalid, 0},
		{"too short", &upstream.MintedCA{Cert: sign(upstreamtest.ShortLife), Intermediates: chain, Roots: roots}, key.Public(), upstream.ErrLifetimeTooShort, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			granted, err := upstream.Validate(tt.minted, tt.key, td, time.Hour, now)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				if granted != tt.wantGranted {
					t.Errorf("granted = %v, want %v", granted, tt.wantGranted)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, upstream.ErrRefused) {
				t.Fatalf("Validate = %v, want %v and upstream.ErrRefused", err, tt.wantErr)
			}
			var re *upstream.RefusedError
			if !errors.As(err, &re) || re.Reason != tt.wantErr {
				t.Errorf("Validate error %#v is not a *RefusedError with reason %v", err, tt.wantErr)
			}
		})
	}
}

func TestSplitChain(t *testing.T) {
	now := upstreamtest.Epoch
	root := upstreamtest.NewRoot(t, "root", now, 100*time.Hour)
	a := root.NewIntermediate(t, "a", now, 50*time.Hour)
	b := a.NewIntermediate(t, "b", now, 40*time.Hour)
	names := func(cs []*x509.Certificate) (out []string) {
		for _, c := range cs {
			out = append(out, c.Subject.CommonName)
		}
		return out
	}
	tests := []struct {
		name      string
		in        []*x509.Certificate
		anchorTop bool
		wantInter []string
		wantRoots []string
	}{
		{"full chain", b.Chain, false, []string{"b", "a"}, []string{"root"}},
		{"full chain, anchor top", b.Chain, true, []string{"b", "a"}, []string{"root"}},
		{"partial chain", b.Chain[:2], false, []string{"b", "a"}, nil},
		{"partial chain, anchor top", b.Chain[:2], true, []string{"b"}, []string{"a"}},
		{"duplicates", []*x509.Certificate{a.Cert, a.Cert, root.Cert, root.Cert}, false, []string{"a"}, []string{"root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inter, roots := upstream.SplitChain(tt.in, tt.anchorTop)
			if got := names(inter); !cmp.Equal(got, tt.wantInter) {
				t.Errorf("intermediates = %v, want %v", got, tt.wantInter)
			}
			if got := names(roots); !cmp.Equal(got, tt.wantRoots) {
				t.Errorf("roots = %v, want %v", got, tt.wantRoots)
			}
		})
	}
}
