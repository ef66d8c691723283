package topology

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const day = 24 * time.Hour

// threeTier is root (90d) -> region (30d) -> leaf (7d) with short SVIDs on
// the leaf: the numbers the plan and the simulation must produce.
const threeTier = `
trust_domain = "example.org"
defaults {
  x509_svid_ttl  = "2h"
  jwt_svid_ttl   = "10m"
  agent_svid_ttl = "4h"
}
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "90d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}
server "region" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "30d"
  agent {
    node_attestor "x509pop" {
      private_key_path = "k.pem"
      certificate_path = "c.pem"
    }
  }
}
server "leaf" {
  parent        = "region"
  listen        = "127.0.0.1:8083"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "join_token" {}
  }
  entry "web" {
    spiffe_id     = "spiffe://example.org/web"
    parent_id     = "spiffe://example.org/host"
    selectors     = ["unix:uid:1000"]
    x509_svid_ttl = "1h"
  }
}
`

func parseThreeTier(t *testing.T) *File {
	t.Helper()
	f, diags := Parse([]byte(threeTier), testPath)
	if diags.HasErrors() {
		t.Fatalf("Parse:\n%s", FormatDiagnostics(diags, nil))
	}
	return f
}

func TestPlanThreeTiers(t *testing.T) {
	got := NewPlan(parseThreeTier(t))
	want := &Plan{
		TrustDomain:     "example.org",
		MinOutageBudget: 4 * time.Hour,
		Tiers: []TierPlan{
			{Server: "root", Depth: 0, Replicas: 1, CATTL: 90 * day, RotateEvery: 45 * day, X509SVIDTTL: 2 * time.Hour, ChainLength: 2,
				WorkloadBudget: time.Hour, JWTBudget: 5 * time.Minute, AgentBudget: 2 * time.Hour},
			{Server: "region", Parent: "root", Prefix: "└─ ", Depth: 1, Replicas: 1, CATTL: 30 * day, RotateEvery: 15 * day, X509SVIDTTL: 2 * time.Hour, ChainLength: 3,
				IssuingBudget: 15 * day, WorkloadBudget: time.Hour, JWTBudget: 5 * time.Minute, AgentBudget: 2 * time.Hour},
			{Server: "leaf", Parent: "region", Prefix: "   └─ ", Depth: 2, Replicas: 1, CATTL: 7 * day, RotateEvery: 84 * time.Hour, X509SVIDTTL: 2 * time.Hour, ChainLength: 4,
				IssuingBudget: 84 * time.Hour, WorkloadBudget: 30 * time.Minute, JWTBudget: 5 * time.Minute, AgentBudget: 2 * time.Hour},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NewPlan() mismatch (-want +got):\n%s", diff)
	}
}

func TestSimulateThreeTiers(t *testing.T) {
	f := parseThreeTier(t)
	type ev struct {
		At, Latest time.Duration
		Server     string
		Kind       string
		Loses      bool
	}
	tests := []struct {
		name        string
		down        string
		d           time.Duration
		want        []ev
		later       []ev
		survivable  bool
		needsAction bool
	}{
		{
			name: "region down shorter than the agent SVID half-life",
			down: "region", d: time.Hour,
			want: []ev{{0, 0, "region", EventDown, false}},
			later: []ev{
				{2 * time.Hour, 4 * time.Hour, "region", EventAgentSVIDs, false},
				{2 * time.Hour, 4 * time.Hour, "leaf", EventManualAction, false},
				{84 * time.Hour, 7 * day, "leaf", EventCAExpired, true},
			},
			survivable: true,
		},
		{
			name: "region down past the leaf agent's SVID: survivable, needs a token",
			down: "region", d: 3 * time.Hour,
			want: []ev{
				{0, 0, "region", EventDown, false},
				{2 * time.Hour, 4 * time.Hour, "region", EventAgentSVIDs, false},
				{2 * time.Hour, 4 * time.Hour, "leaf", EventManualAction, false},
			},
			later:      []ev{{84 * time.Hour, 7 * day, "leaf", EventCAExpired, true}},
			survivable: true, needsAction: true,
		},
		{
			name: "region down past the leaf CA's worst case",
			down: "region", d: 4 * day,
			want: []ev{
				{0, 0, "region", EventDown, false},
				{2 * time.Hour, 4 * time.Hour, "region", EventAgentSVIDs, false},
				{2 * time.Hour, 4 * time.Hour, "leaf", EventManualAction, false},
				{84 * time.Hour, 7 * day, "leaf", EventCAExpired, true},
			},
			needsAction: true,
		},
		{
			name: "leaf down: its workloads' SVIDs",
			down: "leaf", d: 45 * time.Minute,
			want: []ev{
				{0, 0, "leaf", EventDown, false},
				{5 * time.Minute, 10 * time.Minute, "leaf", EventJWTSVIDs, true},
				{30 * time.Minute, 2 * time.Hour, "leaf", EventX509SVIDs, true},
			},
			later: []ev{{2 * time.Hour, 4 * time.Hour, "leaf", EventAgentSVIDs, false}},
		},
		{
			name: "root down for 16 days: region and leaf lose identity at 15 days",
			down: "root", d: 16 * day,
			want: []ev{
				{0, 0, "root", EventDown, false},
				{2 * time.Hour, 4 * time.Hour, "root", EventAgentSVIDs, false},
				{2 * time.Hour, 4 * time.Hour, "region", EventParentAgent, false},
				{15 * day, 30 * day, "region", EventCAExpired, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, err := Simulate(f, tt.down, tt.d, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			conv := func(events []Event) []ev {
				var out []ev
				for _, e := range events {
					out = append(out, ev{e.At, e.Latest, e.Server, e.Kind, e.LosesIdentity})
				}
				return out
			}
			if diff := cmp.Diff(tt.want, conv(sim.Events)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.later, conv(sim.Later)); diff != "" {
				t.Errorf("later events (-want +got):\n%s", diff)
			}
			if sim.Survivable != tt.survivable || sim.NeedsAction != tt.needsAction {
				t.Errorf("survivable, needs action = %v, %v; want %v, %v", sim.Survivable, sim.NeedsAction, tt.survivable, tt.needsAction)
			}
		})
	}

	sim, _ := Simulate(f, "region", 4*day, time.Time{})
	last := sim.Events[len(sim.Events)-1]
	if diff := cmp.Diff([]string{"spiffe://example.org/web"}, last.Workloads); diff != "" {
		t.Errorf("workloads losing identity with the leaf CA (-want +got):\n%s", diff)
	}
	if _, err := Simulate(f, "nope", time.Hour, time.Time{}); err == nil {
		t.Error("Simulate(unknown server) succeeded")
	}
	if _, err := Simulate(f, "leaf", 0, time.Time{}); err == nil {
		t.Error("Simulate(zero duration) succeeded")
	}
}
