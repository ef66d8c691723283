package gcpiit_test

import (
	"errors"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
)

// TestAgentPathTemplate renders agent IDs from SPIRE's template variables
// and from labels, and refuses every label value that would change the
// shape of the agent ID (the CVE-2021-27099 class: whoever may label an
// instance must not choose its agent ID's segments). The fake serves label
// values the real Compute API would refuse, as a compromised or future API
// might.
func TestAgentPathTemplate(t *testing.T) {
	const withLabel = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .Labels.team }}/{{ .InstanceID }}"
	tests := []struct {
		name     string
		template string
		team     string // the instance's "team" label
		noLookup bool   // without use_instance_metadata
		want     string // "" means refused with ErrDenied
	}{
		{name: "SPIRE's variables", template: "/{{ .PluginName }}/{{ .ProjectNumber }}/{{ .Zone }}/{{ .InstanceName }}/{{ .InstanceCreationTimestamp }}",
			want: "spiffe://example.org/spire/agent/gcp_iit/482913775021/us-central1-a/web-1/1793348100"},
		{name: "functions", template: "/gcp/{{ .ProjectID | upper }}/{{ .InstanceName | trimPrefix \"web-\" }}", want: "spiffe://example.org/spire/agent/gcp/PAYMENTS-PROD/1"},
		{name: "trust domain", template: "/{{ .TrustDomain }}/{{ .InstanceID }}", want: "spiffe://example.org/spire/agent/example.org/7312554012345678901"},
		{name: "label", template: withLabel, team: "payments", want: "spiffe://example.org/spire/agent/gcp_iit/payments-prod/payments/7312554012345678901"},
		{name: "label with ../", template: withLabel, team: "../../server"},
		{name: "label ..", template: withLabel, team: ".."},
		{name: "label .", template: withLabel, team: "."},
		{name: "label with a slash", template: withLabel, team: "payments/admin"},
		{name: "label with a double slash", template: withLabel, team: "a//b"},
		{name: "label percent-encoded dots", template: withLabel, team: "%2e%2e"},
		{name: "label percent-encoded slash", template: withLabel, team: "a%2Fb"},
		{name: "empty label", template: withLabel, team: ""},
		{name: "label with a space", template: withLabel, team: "a b"},
		{name: "slash removed by the template", template: "/{{ .PluginName }}/{{ .Labels.team | replace \"/\" \"_\" }}/{{ .InstanceID }}", team: "payments/admin",
			want: "spiffe://example.org/spire/agent/gcp_iit/payments_admin/7312554012345678901"},
		{name: "label not allowed", template: "/{{ .PluginName }}/{{ .Labels.owner }}", team: "payments"},
		{name: "labels without use_instance_metadata", template: withLabel, team: "payments", noLookup: true},
		{name: "escape from /spire/agent", template: "/../../server"},
		{name: "relative path", template: "{{ .InstanceID }}"},
		{name: "empty path", template: "{{ if false }}x{{ end }}"},
		{name: "trailing slash", template: "/{{ .InstanceID }}/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			inst := testInstance()
			inst.Labels["team"] = tc.team
			f.google.PutInstance(inst)
			a := f.attestor(t, func(c *gcpiit.Config) {
				c.AgentPathTemplate = tc.template
				c.UseInstanceMetadata = !tc.noLookup
				c.AllowedLabelKeys = []string{"team"}
			})
			res, err := a.Attest(testContext(t), token(t, f.signer, inst), noChallenge)
			if tc.want == "" {
				if !errors.Is(err, nodeattest.ErrDenied) {
					t.Fatalf("Attest() = %v, %v; want ErrDenied for team=%q", res, err, tc.team)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if res.AgentID.String() != tc.want {
				t.Errorf("agent ID = %s, want %s", res.AgentID, tc.want)
			}
		})
	}
}
