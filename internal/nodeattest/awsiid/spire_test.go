package awsiid_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
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

// spireVectors is testdata/spire_v1.13.3_vectors.json, written by running
// SPIRE v1.13.3's own aws_iid agent and server plugins against the fakes
// with a document AWS signed (testdata/spirevectors, which also checked
// arbor against them).
type spireVectors struct {
	TrustDomain string          `json:"trust_domain"`
	Payload     json.RawMessage `json:"payload"`
	Cases       []struct {
		Name     string               `json:"name"`
		Instance *awsiidtest.Instance `json:"instance"`
		Config   struct {
			SkipBlockDevice                 bool     `json:"skip_block_device"`
			DisableInstanceProfileSelectors bool     `json:"disable_instance_profile_selectors"`
			LocalValidAccountIDs            []string `json:"account_ids_for_local_validation"`
			AgentPathTemplate               string   `json:"agent_path_template"`
		} `json:"config"`
		SPIREAgent *struct {
			AgentID     string   `json:"agent_id"`
			Selectors   []string `json:"selectors"`
			CanReattest bool     `json:"can_reattest"`
		} `json:"spire_agent"`
		SPIRERefusal string `json:"spire_refusal"`
		ArborDiffers string `json:"arbor_differs"`
	} `json:"cases"`
}

// TestSPIRECompatibility replays SPIRE's aws_iid: arbor's agent half must
// send SPIRE's agent's bytes for the same metadata service, and arbor's
// server half, given SPIRE's payload (a real AWS signature, verified with
// the shipped certificate) and the same DescribeInstances answers, must
// attest the agent ID and selectors SPIRE attested and refuse what SPIRE
// refused — except where the vectors say arbor refuses on purpose.
func TestSPIRECompatibility(t *testing.T) {
	var v spireVectors
	if err := json.Unmarshal(must(os.ReadFile("testdata/spire_v1.13.3_vectors.json")), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 {
		t.Fatal("no SPIRE vectors")
	}
	// The file is indented; the payload SPIRE's agent sent is its compact
	// form.
	var compact bytes.Buffer
	if err := json.Compact(&compact, v.Payload); err != nil {
		t.Fatal(err)
	}
	v.Payload = compact.Bytes()
	ctx := testContext(t)
	read := func(name string) []byte { return must(os.ReadFile("testdata/aws/" + name)) }
	imds := awsiidtest.NewIMDS(read("ap-southeast-2.document"), string(read("ap-southeast-2.signature")), string(read("ap-southeast-2.rsa2048")))
	defer imds.Close()
	got := must(awsiid.AgentPayload(ctx, awsiid.AgentConfig{EC2MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()}))
	if !bytes.Equal(got, v.Payload) {
		t.Errorf("AgentPayload() = %s\nwant SPIRE's %s", got, v.Payload)
	}

	fake := awsiidtest.NewAWS(accessKeyID, secretAccessKey)
	defer fake.Close()
	fake.PutInstanceProfile("web-profile", "arn:aws:iam::189292791360:role/web")
	trust := spiffeid.RequireTrustDomainFromString(v.TrustDomain)
	for _, c := range v.Cases {
		t.Run(c.Name, func(t *testing.T) {
			fake.DeleteInstance("i-0c5541936caf78c12")
			if c.Instance != nil {
				fake.PutInstance(*c.Instance)
			}
			a, err := awsiid.New(awsiid.Config{
				AccessKeyID: accessKeyID, SecretAccessKey: secretAccessKey,
				SkipBlockDevice:                 c.Config.SkipBlockDevice,
				DisableInstanceProfileSelectors: c.Config.DisableInstanceProfileSelectors,
				LocalValidAccountIDs:            c.Config.LocalValidAccountIDs,
				AgentPathTemplate:               c.Config.AgentPathTemplate,
				EC2Endpoint:                     fake.URL(), IAMEndpoint: fake.URL(), HTTPClient: fake.Client(),
			}, trust)
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.Attest(ctx, v.Payload, noChallenge)
			switch {
			case c.ArborDiffers != "":
				if !errors.Is(err, nodeattest.ErrDenied) {
					t.Errorf("Attest() = %+v, %v; want ErrDenied where SPIRE attested %s (%s)", res, err, c.SPIREAgent.AgentID, c.ArborDiffers)
				}
			case c.SPIREAgent == nil:
				if err == nil {
					t.Errorf("Attest() = %s, want a refusal as SPIRE's %q", res.AgentID, c.SPIRERefusal)
				}
			case err != nil:
				t.Errorf("Attest() = %v, want SPIRE's %s", err, c.SPIREAgent.AgentID)
			default:
				var sels []string
				for _, s := range res.Selectors {
					sels = append(sels, s.Value)
				}
				if res.AgentID.String() != c.SPIREAgent.AgentID || res.CanReattest != c.SPIREAgent.CanReattest {
					t.Errorf("Attest() = %s (reattest %v), want SPIRE's %s (%v)", res.AgentID, res.CanReattest, c.SPIREAgent.AgentID, c.SPIREAgent.CanReattest)
				}
				if diff := cmp.Diff(c.SPIREAgent.Selectors, sels); diff != "" {
					t.Errorf("selectors differ from SPIRE's (-spire +arbor):\n%s", diff)
				}
			}
		})
	}
}
