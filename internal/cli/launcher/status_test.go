package launcher

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/cli/demo"
)

const rootMetrics = `# HELP arbor_federation_bundle_age_seconds Time since the federated bundle was last fetched successfully, by trust domain.
# TYPE arbor_federation_bundle_age_seconds gauge
arbor_federation_bundle_age_seconds{trust_domain="other.example"} 300
arbor_federation_bundle_age_seconds{trust_domain="partner.example"} 12.4
# TYPE arbor_federation_refreshes_total counter
arbor_federation_refreshes_total{result="error",trust_domain="partner.example"} 1
arbor_federation_refreshes_total{result="ok",trust_domain="partner.example"} 3
arbor_federation_refreshes_total{result="error",trust_domain="other.example"} 7
arbor_federation_refreshes_total{result="error",trust_domain="starting.example"} 2
arbor_api_svids_issued_total{kind="x509"} 4
arbor_api_svids_issued_total{kind="jwt"} 2
arbor_ca_x509_remaining_seconds 3600
arbor_odd{note="a \"quoted\", \\ value",x="y"} 1
go_goroutines 42
`

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(rootMetrics))
	if err != nil {
		t.Fatal(err)
	}
	sums := []struct {
		name string
		want float64
	}{
		{"arbor_api_svids_issued_total", 6},
		{"arbor_ca_x509_remaining_seconds", 3600},
		{"arbor_federation_refreshes_total", 13},
		{"go_goroutines", 0},
	}
	for _, tt := range sums {
		if got := m.sum(tt.name); got != tt.want {
			t.Errorf("sum(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
	values := []struct {
		name   string
		match  []string
		want   float64
		wantOK bool
	}{
		{"arbor_federation_bundle_age_seconds", []string{"trust_domain", "partner.example"}, 12.4, true},
		{"arbor_federation_bundle_age_seconds", []string{"trust_domain", "starting.example"}, 0, false},
		{"arbor_federation_refreshes_total", []string{"trust_domain", "partner.example", "result", "ok"}, 3, true},
		{"arbor_federation_refreshes_total", []string{"trust_domain", "partner.example"}, 4, true},
		{"arbor_odd", []string{"note", `a "quoted", \ value`, "x", "y"}, 1, true},
		{"arbor_ca_x509_remaining_seconds", nil, 3600, true},
	}
	for _, tt := range values {
		if got, ok := m.value(tt.name, tt.match...); got != tt.want || ok != tt.wantOK {
			t.Errorf("value(%s, %q) = %v, %v; want %v, %v", tt.name, tt.match, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestFederationStatus(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(rootMetrics))
	if err != nil {
		t.Fatal(err)
	}
	held := &types.Bundle{X509Authorities: make([]*types.X509Certificate, 1), JwtAuthorities: make([]*types.JWTKey, 2)}
	td := spiffeid.RequireTrustDomainFromString
	tests := []struct {
		name      string
		td        spiffeid.TrustDomain
		held      *types.Bundle
		heldErr   error
		healthOff bool
		merr      error
		want      string
	}{
		{"fetched", td("partner.example"), held, nil, false, nil,
			"federated partner.example: 1 X.509, 2 JWT, bundle age 12s, refreshes 3 ok, 1 failed"},
		{"health_listen off", td("partner.example"), held, nil, true, nil,
			"federated partner.example: 1 X.509, 2 JWT, age unknown (health_listen off)"},
		{"never fetched by the refresher", td("starting.example"), nil, nil, false, nil,
			"federated starting.example: no bundle held yet, not fetched by the refresher yet, refreshes 0 ok, 2 failed"},
		{"metrics unreachable", td("partner.example"), held, nil, false, errors.New("connection refused"),
			"federated partner.example: 1 X.509, 2 JWT, age unknown (metrics: connection refused)"},
		{"bundle unreadable", td("partner.example"), nil, errors.New("bundle list: timed out"), false, nil,
			"federated partner.example: bundle unreadable (bundle list: timed out), bundle age 12s, refreshes 3 ok, 1 failed"},
	}
	for _, tt := range tests {
		mm := m
		if tt.merr != nil {
			mm = nil
		}
		if got := federationStatus(tt.td, tt.held, tt.heldErr, tt.healthOff, mm, tt.merr); got != tt.want {
			t.Errorf("%s: federationStatus = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestDemoLine(t *testing.T) {
	const me, sameTD, other = "spiffe://example.org/demo/leaf-a", "spiffe://example.org/demo/leaf-b", "spiffe://partner.example/demo/leaf"
	tests := []struct {
		peer, from, want string
	}{
		{sameTD, sameTD, ", demo " + me + ": mTLS ok, JWT ok"},
		{sameTD, me, ", demo " + me + ": mTLS ok, JWT ok"},
		{other, other, ", demo " + me + ": mTLS ok, JWT ok (peer " + other + ")"},
		{other, sameTD, ", demo " + me + ": mTLS ok, JWT ok (mTLS peer " + other + ", JWT from " + sameTD + ")"},
		{"", "", ", demo " + me + ": mTLS ok, JWT ok"}, // a status file of an older demo
	}
	for _, tt := range tests {
		st := demo.Status{ID: me, MTLS: "ok", JWT: "ok", Peer: tt.peer, JWTFrom: tt.from}
		if got := demoLine(st); got != tt.want {
			t.Errorf("demoLine(peer %q, JWT from %q) = %q, want %q", tt.peer, tt.from, got, tt.want)
		}
	}
}
