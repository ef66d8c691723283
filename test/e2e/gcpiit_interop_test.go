package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit/gcpiittest"
)

// TestGCPIITSpireAgentToArbor: a real spire-agent with its own gcp_iit
// plugin, its identity_token_host pointed at a local Compute Engine
// metadata server that issues full-format identity tokens signed by a test
// key, attests to an arbor server whose gcp_iit verifies the token with that
// key (served as Google's by a local stand-in) and reads the instance from
// a local Compute API: SPIRE's payload, agent ID and selectors, and a
// workload served. A second spire-agent on the same instance is refused
// while the first is attested (trust on first use). Against every SPIRE
// release.
func TestGCPIITSpireAgentToArbor(t *testing.T) { forEachSpire(t, testGCPIITSpireAgentToArbor) }

func testGCPIITSpireAgentToArbor(t *testing.T, p *spirePeer) {
	signer, err := gcpiittest.NewSigner("0e8a4c1b2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b")
	if err != nil {
		t.Fatal(err)
	}
	inst := gcpiittest.Instance{ProjectID: "payments-prod", ProjectNumber: 482913775021, Zone: "europe-west1-b",
		ID: 7312554012345678901, Name: "web-1", Created: time.Now().Add(-48 * time.Hour).Truncate(time.Second),
		ServiceAccounts: []gcpiittest.ServiceAccount{{Email: "web@payments-prod.iam.gserviceaccount.com", UniqueID: "104532987654321098765"}},
		Labels:          map[string]string{"team": "payments", "owner": "alice"},
		Tags:            []string{"http-server"}}
	google := gcpiittest.NewGoogle(signer)
	t.Cleanup(google.Close)
	google.PutInstance(inst)
	md := gcpiittest.NewMetadataServer(gcpiittest.MetadataConfig{Signer: signer, Instance: inst, PlainHTTP: true})
	t.Cleanup(md.Close)

	att, err := gcpiit.New(gcpiit.Config{
		ProjectIDAllowList: []string{"payments-prod"}, UseInstanceMetadata: true, AllowedLabelKeys: []string{"team"},
		KeysURL: google.KeysURL(), ComputeEndpoint: google.ComputeEndpoint(), HTTPClient: google.Client(),
	}, td)
	if err != nil {
		t.Fatal(err)
	}
	plugin := fmt.Sprintf(`NodeAttestor "gcp_iit" {
    plugin_data {
      identity_token_host = %q
    }
  }`, md.Host())
	wantID := spiffeid.RequireFromPath(td, "/spire/agent/gcp_iit/payments-prod/"+strconv.FormatUint(inst.ID, 10))
	spireAgentAttestsOnce(t, p, "iit", att, nil, plugin, wantID, []string{"gcp_iit:instance-name:web-1", "gcp_iit:label:team:payments",
		"gcp_iit:project-id:payments-prod", "gcp_iit:sa:web@payments-prod.iam.gserviceaccount.com", "gcp_iit:tag:http-server",
		"gcp_iit:zone:europe-west1-b"})
	// What spire-agent asked the metadata server for: SPIRE's audience, the
	// full format, the default service account.
	reqs := md.Requests()
	if len(reqs) == 0 || reqs[0].ServiceAccount != "default" || reqs[0].Query.Get("audience") != gcpiit.Audience || reqs[0].Query.Get("format") != "full" {
		t.Errorf("spire-agent's identity token requests: %+v, want the default account's, audience %s, format full", reqs, gcpiit.Audience)
	}
}
