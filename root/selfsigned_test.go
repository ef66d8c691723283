package root_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/root"
)

func TestSelfSignedMintX509CA(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		subject pkix.Name
		wantO   []string
		wantCN  string
	}{
		{"default subject", pkix.Name{}, []string{"arbor"}, "example.org root"},
		{"custom subject", pkix.Name{Organization: []string{"Acme"}, CommonName: "Acme root"}, []string{"Acme"}, "Acme root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &root.SelfSigned{TrustDomain: td, Subject: tt.subject, Now: func() time.Time { return now }}
			m, err := s.MintX509CA(context.Background(), key, 48*time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			c := m.Cert
			if len(m.Roots) != 1 || !m.Roots[0].Equal(c) || len(m.Intermediates) != 0 {
				t.Fatalf("MintX509CA roots %d, intermediates %d; want the certificate itself as the only root", len(m.Roots), len(m.Intermediates))
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("certificate is not self-signed: %v", err)
			}
			var uris []string
			for _, u := range c.URIs {
				uris = append(uris, u.String())
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"URIs", uris, []string{"spiffe://example.org"}},
				{"CA", c.IsCA && c.BasicConstraintsValid, true},
				{"KeyUsage", c.KeyUsage, x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
				{"SubjectKeyId set", len(c.SubjectKeyId) > 0, true},
				{"O", c.Subject.Organization, tt.wantO},
				{"CN", c.Subject.CommonName, tt.wantCN},
				{"subject serial", c.Subject.SerialNumber, c.SerialNumber.String()},
				{"NotBefore", c.NotBefore, now.Add(-10 * time.Second)},
				{"NotAfter", c.NotAfter, now.Add(48 * time.Hour)},
				{"public key", c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()), true},
			}
			for _, ch := range checks {
				if diff := cmp.Diff(ch.want, ch.got); diff != "" {
					t.Errorf("%s (-want +got):\n%s", ch.what, diff)
				}
			}
		})
	}
}

func TestSelfSignedRejects(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tests := []struct {
		name string
		s    *root.SelfSigned
		ttl  time.Duration
	}{
		{"no trust domain", &root.SelfSigned{}, time.Hour},
		{"zero ttl", &root.SelfSigned{TrustDomain: td}, 0},
		{"negative ttl", &root.SelfSigned{TrustDomain: td}, -time.Hour},
	}
	for _, tt := range tests {
		if _, err := tt.s.MintX509CA(context.Background(), key, tt.ttl); err == nil {
			t.Errorf("%s: MintX509CA succeeded, want an error", tt.name)
		}
	}
}
