package downstream_test

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/downstream"
)

func TestChildCAPolicy(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	csr := func(uris ...string) *x509.CertificateRequest {
		r := &x509.CertificateRequest{}
		for _, u := range uris {
			r.URIs = append(r.URIs, &url.URL{Scheme: "spiffe", Host: u})
		}
		return r
	}
	tests := []struct {
		name            string
		defaultTTL, max time.Duration
		csr             *x509.CertificateRequest
		preferred, want time.Duration
		refused         bool
	}{
		{"no TTL asked: the default", 24 * time.Hour, 48 * time.Hour, csr("example.org"), 0, 24 * time.Hour, false},
		{"no TTL asked: at most the cap", 24 * time.Hour, 6 * time.Hour, csr("example.org"), 0, 6 * time.Hour, false},
		{"asked within the cap", 24 * time.Hour, 6 * time.Hour, csr(), time.Hour, time.Hour, false},
		{"asked beyond the cap", 24 * time.Hour, 6 * time.Hour, csr(), 7 * time.Hour, 0, true},
		{"no cap", 24 * time.Hour, 0, csr(), 100 * time.Hour, 100 * time.Hour, false},
		{"negative", 24 * time.Hour, 0, csr(), -time.Second, 0, true},
		{"another trust domain", 24 * time.Hour, 0, csr("other.org"), 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := downstream.ChildCAPolicy(td, tt.defaultTTL, tt.max)(tt.csr, tt.preferred)
			if tt.refused {
				if !errors.Is(err, downstream.ErrChildRequest) {
					t.Fatalf("policy(%v) = %v, %v; want ErrChildRequest", tt.preferred, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("policy(%v) = %v, %v; want %v", tt.preferred, got, err, tt.want)
			}
		})
	}
}
