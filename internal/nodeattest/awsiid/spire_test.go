package awsiid_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

// The facts below were read from SPIRE v1.13.3's source
// (pkg/common/plugin/aws/iid.go, pkg/agent/plugin/nodeattestor/awsiid/iid.go,
// pkg/server/plugin/nodeattestor/awsiid/{iid.go,spiffeid.go}) and its
// plugin docs; no SPIRE code is used.

// spirePayload mirrors SPIRE's IIDAttestationData: three string fields,
// encoded by encoding/json in this order, which is what SPIRE's agent sends
// and what its server decodes.
type spirePayload struct {
	Document         string `json:"document"`
	Signature        string `json:"signature"`
	SignatureRSA2048 string `json:"rsa2048"`
}

// spireDocument lists the instance identity document fields SPIRE's
// server reads (through the SDK's imds.InstanceIdentityDocument) for the
// agent ID and selectors.
var spireDocumentFields = []string{"accountId", "instanceId", "region", "availabilityZone", "imageId"}

// TestSPIREPayloadFormat: AgentPayload's bytes are exactly what SPIRE's
// agent would send for the same metadata answers, and a payload built the
// way SPIRE's agent builds it attests to arbor.
func TestSPIREPayloadFormat(t *testing.T) {
	f := newFixture(t)
	doc := testDocument().JSON()
	rsa2048, sig := must(f.signer.Sign(doc)), must(f.signer.SignRSA1024(doc))
	imds := awsiidtest.NewIMDS(doc, sig, rsa2048)
	defer imds.Close()
	ctx := testContext(t)
	got := must(awsiid.AgentPayload(ctx, awsiid.AgentConfig{EC2MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()}))
	want := must(json.Marshal(&spirePayload{Document: string(doc), Signature: sig, SignatureRSA2048: rsa2048}))
	if !bytes.Equal(got, want) {
		t.Errorf("AgentPayload() = %s\nwant SPIRE's %s", got, want)
	}
	var decoded spirePayload
	dec := json.NewDecoder(bytes.NewReader(got))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&decoded); err != nil {
		t.Errorf("SPIRE's server cannot decode AgentPayload(): %v", err)
	}
	if _, err := f.attestor(t, nil).Attest(ctx, want, noChallenge); err != nil {
		t.Errorf("Attest(SPIRE agent payload) = %v", err)
	}
}

// TestSPIREDocumentFields: arbor reads the document fields SPIRE reads,
// under the same JSON names.
func TestSPIREDocumentFields(t *testing.T) {
	typ := reflect.TypeFor[awsiid.InstanceIdentityDocument]()
	names := map[string]bool{}
	for i := range typ.NumField() {
		names[strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	for _, f := range spireDocumentFields {
		if !names[f] {
			t.Errorf("InstanceIdentityDocument lacks SPIRE's field %q", f)
		}
	}
}

// TestSPIRESelectorsAndID: the selector prefixes and the default agent ID
// are SPIRE's (az, iamrole, image:id, instance:id, region, sg:id, sg:name,
// tag; /spire/agent/aws_iid/<account>/<region>/<instance>).
func TestSPIRESelectorsAndID(t *testing.T) {
	if awsiid.DefaultAgentPathTemplate != "/{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}" {
		t.Errorf("DefaultAgentPathTemplate = %q, not SPIRE's", awsiid.DefaultAgentPathTemplate)
	}
	f := newFixture(t)
	res, err := f.attestor(t, nil).Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
	if err != nil {
		t.Fatal(err)
	}
	prefixes := map[string]bool{}
	for _, s := range res.Selectors {
		if s.Type != "aws_iid" {
			t.Errorf("selector type %q, want aws_iid", s.Type)
		}
		for _, p := range []string{"az:", "iamrole:", "image:id:", "instance:id:", "region:", "sg:id:", "sg:name:", "tag:"} {
			if strings.HasPrefix(s.Value, p) {
				prefixes[p] = true
			}
		}
	}
	if len(prefixes) != 8 {
		t.Errorf("selector prefixes = %v, want all 8 of SPIRE's", prefixes)
	}
}
