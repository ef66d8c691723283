// Command spirevectors checks arbor's aws_iid against SPIRE v1.13.3's own
// aws_iid plugins and writes what SPIRE did as test vectors. Both run
// against arbor's fakes (awsiidtest): SPIRE's agent plugin and arbor's
// AgentPayload read the same IMDSv2 fake, which serves a document AWS
// really signed (testdata/aws, ap-southeast-2), so SPIRE's server plugin
// verifies it with its own AWS certificates; SPIRE's server plugin reaches
// the EC2 and IAM fake through AWS_ENDPOINT_URL_EC2 / _IAM and
// AWS_CA_BUNDLE, as any SDK client does. It fails when arbor and SPIRE
// disagree on a payload byte, an agent ID, a selector or whether to
// accept, except for the differences listed in knownDifferences (where
// arbor is stricter on purpose). arbor's tests replay the vectors without
// SPIRE (spire_test.go).
//
// It lives under testdata (ignored by the go tool) with its own go.mod so
// that arbor never depends on SPIRE. Regenerate with:
//
//	cd internal/nodeattest/awsiid/testdata/spirevectors
//	GOFLAGS=-mod=mod go run . > ../spire_v1.13.3_vectors.json
package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-plugin-sdk/pluginsdk"
	agentstorev1 "github.com/spiffe/spire-plugin-sdk/proto/spire/hostservice/server/agentstore/v1"
	agentnav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	spireagent "github.com/spiffe/spire/pkg/agent/plugin/nodeattestor/awsiid"
	spireserver "github.com/spiffe/spire/pkg/server/plugin/nodeattestor/awsiid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

// Vectors is the file written.
type Vectors struct {
	SPIREVersion string `json:"spire_version"`
	TrustDomain  string `json:"trust_domain"`
	// Payload is what SPIRE's agent plugin sent for the metadata service
	// serving testdata/aws/ap-southeast-2.*; arbor's AgentPayload sent the
	// same bytes.
	Payload json.RawMessage `json:"payload"`
	Cases   []Case          `json:"cases"`
}

// Case is one instance as DescribeInstances describes it, one server
// configuration, and what SPIRE's server plugin made of the payload.
type Case struct {
	Name     string               `json:"name"`
	Instance *awsiidtest.Instance `json:"instance"` // nil: AWS does not know the instance
	Config   ServerHCL            `json:"config"`
	// SPIREAgent is what SPIRE attested, or SPIRERefusal why it refused.
	SPIREAgent   *Attested `json:"spire_agent,omitempty"`
	SPIRERefusal string    `json:"spire_refusal,omitempty"`
	// ArborDiffers, when set, says why arbor's verdict is not SPIRE's.
	ArborDiffers string `json:"arbor_differs,omitempty"`
}

// ServerHCL is the plugin_data both servers get (as SPIRE's HCL, and as
// awsiid.Config).
type ServerHCL struct {
	SkipBlockDevice                 bool     `json:"skip_block_device,omitempty"`
	DisableInstanceProfileSelectors bool     `json:"disable_instance_profile_selectors,omitempty"`
	LocalValidAccountIDs            []string `json:"account_ids_for_local_validation,omitempty"`
	AgentPathTemplate               string   `json:"agent_path_template,omitempty"`
}

// Attested is an attestation's outcome.
type Attested struct {
	AgentID     string   `json:"agent_id"`
	Selectors   []string `json:"selectors"`
	CanReattest bool     `json:"can_reattest"`
}

const (
	trustDomain = "example.org"
	accessKey   = "AKIDSPIREVECTORS01"
	secretKey   = "spire-vectors-secret"
	instanceID  = "i-0c5541936caf78c12"
)

// knownDifferences are the cases where arbor refuses what SPIRE accepts.
var knownDifferences = map[string]string{
	"tag with a slash in the agent path": "arbor refuses an instance tag whose \"/\" would become a separator of the agent ID (CVE-2021-27099 class); SPIRE only checks that the path is valid",
}

func main() {
	v, err := run()
	if err != nil {
		log.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(append(out, '\n'))
}

func baseInstance() awsiidtest.Instance {
	launch := time.Date(2026, 2, 16, 0, 38, 27, 0, time.UTC)
	return awsiidtest.Instance{
		ID:             instanceID,
		ImageID:        "ami-0cbde744623b7506b",
		InstanceType:   "t4g.small",
		RootDeviceName: "/dev/xvda",
		BlockDevices:   []awsiidtest.BlockDevice{{DeviceName: "/dev/xvda", VolumeID: "vol-0123456789abcdef0", AttachTime: launch.Add(time.Second)}},
		Interfaces:     []awsiidtest.NetworkInterface{{ID: "eni-0123456789abcdef0", DeviceIndex: 0, AttachTime: launch}},
		SecurityGroups: []awsiidtest.SecurityGroup{{ID: "sg-0123456789abcdef0", Name: "web"}},
		Tags:           []awsiidtest.Tag{{Key: "Name", Value: "web-1"}, {Key: "team", Value: "payments"}},

		InstanceProfileARN: "arn:aws:iam::189292791360:instance-profile/web-profile",
	}
}

func run() (*Vectors, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "aws", name))
		if err != nil {
			log.Fatal(err)
		}
		return string(b)
	}
	doc, sig, rsa2048 := read("ap-southeast-2.document"), read("ap-southeast-2.signature"), read("ap-southeast-2.rsa2048")

	imds := awsiidtest.NewIMDS([]byte(doc), sig, rsa2048)
	defer imds.Close()
	fake := awsiidtest.NewAWS(accessKey, secretKey)
	defer fake.Close()
	fake.PutInstanceProfile("web-profile", "arn:aws:iam::189292791360:role/web")

	// Both fakes serve httptest's certificate; SPIRE's SDK clients trust it
	// through AWS_CA_BUNDLE and find the fake through the endpoint
	// variables.
	dir, err := os.MkdirTemp("", "awsiid-spirevectors")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bundle := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fake.Certificate().Raw}), 0o600); err != nil {
		return nil, err
	}
	for k, val := range map[string]string{
		"AWS_CA_BUNDLE":               bundle,
		"AWS_ENDPOINT_URL_EC2":        fake.URL(),
		"AWS_ENDPOINT_URL_IAM":        fake.URL(),
		"AWS_CONFIG_FILE":             filepath.Join(dir, "none"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
	} {
		os.Setenv(k, val)
	}

	v := &Vectors{SPIREVersion: "v1.13.3", TrustDomain: trustDomain}
	spirePayload, err := spireAgentPayload(ctx, imds.URL())
	if err != nil {
		return nil, fmt.Errorf("SPIRE's agent: %w", err)
	}
	arborPayload, err := awsiid.AgentPayload(ctx, awsiid.AgentConfig{EC2MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()})
	if err != nil {
		return nil, fmt.Errorf("arbor's agent: %w", err)
	}
	if string(arborPayload) != string(spirePayload) {
		return nil, fmt.Errorf("arbor's payload %s differs from SPIRE's %s", arborPayload, spirePayload)
	}
	v.Payload = spirePayload

	with := func(edit func(*awsiidtest.Instance)) *awsiidtest.Instance {
		i := baseInstance()
		edit(&i)
		return &i
	}
	replaced := func(i *awsiidtest.Instance) {
		i.BlockDevices[0].AttachTime = i.BlockDevices[0].AttachTime.Add(10 * time.Minute)
	}
	v.Cases = []Case{
		{Name: "instance launched with its root volume", Instance: with(func(*awsiidtest.Instance) {})},
		{Name: "root volume attached after launch", Instance: with(replaced)},
		{Name: "root volume attached after launch, skip_block_device", Instance: with(replaced), Config: ServerHCL{SkipBlockDevice: true}},
		{Name: "root volume attached after launch, account for local validation", Instance: with(replaced), Config: ServerHCL{LocalValidAccountIDs: []string{"189292791360"}}},
		{Name: "instance store root", Instance: with(func(i *awsiidtest.Instance) { replaced(i); i.RootDeviceType = "instance-store" })},
		{Name: "no network interface 0", Instance: with(func(i *awsiidtest.Instance) { i.Interfaces[0].DeviceIndex = 1 })},
		{Name: "instance stopped", Instance: with(func(i *awsiidtest.Instance) { i.State = "stopped" })},
		{Name: "instance unknown to EC2"},
		{Name: "instance profile selectors disabled", Instance: with(func(*awsiidtest.Instance) {}), Config: ServerHCL{DisableInstanceProfileSelectors: true}},
		{Name: "no instance profile, no security groups, no tags", Instance: with(func(i *awsiidtest.Instance) {
			i.InstanceProfileARN, i.SecurityGroups, i.Tags = "", nil, nil
		})},
		{Name: "agent path template with a tag", Instance: with(func(*awsiidtest.Instance) {}), Config: ServerHCL{AgentPathTemplate: "/{{ .PluginName }}/{{ .Tags.team }}/{{ .InstanceID }}"}},
		{Name: "tag with a slash in the agent path", Instance: with(func(i *awsiidtest.Instance) { i.Tags[1].Value = "payments/admin" }), Config: ServerHCL{AgentPathTemplate: "/{{ .PluginName }}/{{ .Tags.team }}/{{ .InstanceID }}"}},
		{Name: "tag with .. in the agent path", Instance: with(func(i *awsiidtest.Instance) { i.Tags[1].Value = ".." }), Config: ServerHCL{AgentPathTemplate: "/{{ .PluginName }}/{{ .Tags.team }}/{{ .InstanceID }}"}},
	}

	var mismatches []string
	for i := range v.Cases {
		c := &v.Cases[i]
		if c.Instance != nil {
			fake.PutInstance(*c.Instance)
		} else {
			fake.DeleteInstance(instanceID)
		}
		spireRes, spireErr := spireAttest(ctx, c.Config, spirePayload)
		if spireErr != nil {
			st := status.Convert(spireErr)
			c.SPIRERefusal = st.Code().String() + ": " + st.Message()
		} else {
			c.SPIREAgent = spireRes
		}

		arbor, err := awsiid.New(awsiid.Config{
			AccessKeyID: accessKey, SecretAccessKey: secretKey,
			SkipBlockDevice: c.Config.SkipBlockDevice, DisableInstanceProfileSelectors: c.Config.DisableInstanceProfileSelectors,
			LocalValidAccountIDs: c.Config.LocalValidAccountIDs, AgentPathTemplate: c.Config.AgentPathTemplate,
			EC2Endpoint: fake.URL(), IAMEndpoint: fake.URL(), HTTPClient: fake.Client(),
		}, spiffeid.RequireTrustDomainFromString(trustDomain))
		if err != nil {
			return nil, err
		}
		arborRes, arborErr := arbor.Attest(ctx, spirePayload, nil)
		c.ArborDiffers = knownDifferences[c.Name]
		switch {
		case (spireErr == nil) != (arborErr == nil):
			if c.ArborDiffers == "" || spireErr != nil {
				mismatches = append(mismatches, fmt.Sprintf("%s: SPIRE: %v, arbor: %v", c.Name, spireErr, arborErr))
			}
			log.Printf("%s: known difference: SPIRE: %v; arbor: %v", c.Name, spireRes, arborErr)
		case arborErr == nil:
			got := &Attested{AgentID: arborRes.AgentID.String(), CanReattest: arborRes.CanReattest}
			for _, s := range arborRes.Selectors {
				got.Selectors = append(got.Selectors, s.Value)
			}
			slices.Sort(got.Selectors)
			if g, w := fmt.Sprint(*got), fmt.Sprint(*spireRes); g != w {
				mismatches = append(mismatches, fmt.Sprintf("%s: arbor attested %s, SPIRE %s", c.Name, g, w))
			}
			if c.ArborDiffers != "" {
				mismatches = append(mismatches, fmt.Sprintf("%s: listed as a difference but both accept", c.Name))
			}
		default:
			log.Printf("%s: both refuse; SPIRE: %s; arbor: %v", c.Name, c.SPIRERefusal, arborErr)
		}
	}
	if len(mismatches) > 0 {
		return nil, errors.New("arbor and SPIRE disagree:\n" + strings.Join(mismatches, "\n"))
	}
	return v, nil
}

// spireAgentPayload runs SPIRE's agent plugin against the metadata service
// at endpoint and returns the payload it sends.
func spireAgentPayload(ctx context.Context, endpoint string) ([]byte, error) {
	p := spireagent.New()
	if _, err := p.Configure(ctx, &configv1.ConfigureRequest{
		HclConfiguration:  fmt.Sprintf("ec2_metadata_endpoint = %q\n", endpoint),
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: trustDomain},
	}); err != nil {
		return nil, err
	}
	s := &agentStream{ctx: ctx}
	if err := p.AidAttestation(s); err != nil {
		return nil, err
	}
	return s.payload, nil
}

// spireAttest configures SPIRE's server plugin with cfg and runs it on
// payload, with an agent store in which no agent is attested yet.
func spireAttest(ctx context.Context, cfg ServerHCL, payload []byte) (*Attested, error) {
	p := spireserver.New()
	p.SetLogger(hclog.NewNullLogger())
	if err := p.BrokerHostServices(broker{}); err != nil {
		return nil, err
	}
	hcl := fmt.Sprintf("access_key_id = %q\nsecret_access_key = %q\nskip_block_device = %v\ndisable_instance_profile_selectors = %v\n",
		accessKey, secretKey, cfg.SkipBlockDevice, cfg.DisableInstanceProfileSelectors)
	if len(cfg.LocalValidAccountIDs) > 0 {
		hcl += fmt.Sprintf("account_ids_for_local_validation = [%q]\n", strings.Join(cfg.LocalValidAccountIDs, `", "`))
	}
	if cfg.AgentPathTemplate != "" {
		hcl += fmt.Sprintf("agent_path_template = %q\n", cfg.AgentPathTemplate)
	}
	if _, err := p.Configure(ctx, &configv1.ConfigureRequest{
		HclConfiguration: hcl, CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: trustDomain},
	}); err != nil {
		return nil, fmt.Errorf("configuring SPIRE's server plugin: %w", err)
	}
	s := &serverStream{ctx: ctx, req: &servernav1.AttestRequest{Request: &servernav1.AttestRequest_Payload{Payload: payload}}}
	if err := p.Attest(s); err != nil {
		return nil, err
	}
	attrs := s.resp.GetAgentAttributes()
	if attrs == nil {
		return nil, errors.New("SPIRE answered without agent attributes")
	}
	res := &Attested{AgentID: attrs.SpiffeId, Selectors: slices.Clone(attrs.SelectorValues), CanReattest: attrs.CanReattest}
	slices.Sort(res.Selectors)
	return res, nil
}

// broker gives SPIRE's server plugin an agent store that knows no agent.
type broker struct{}

func (broker) BrokerClient(c pluginsdk.ServiceClient) bool {
	if s, ok := c.(*agentstorev1.AgentStoreServiceClient); ok {
		s.AgentStoreClient = noAgents{}
		return true
	}
	return false
}

type noAgents struct{}

func (noAgents) GetAgentInfo(context.Context, *agentstorev1.GetAgentInfoRequest, ...grpc.CallOption) (*agentstorev1.GetAgentInfoResponse, error) {
	return nil, status.Error(codes.NotFound, "no such agent")
}

type agentStream struct {
	grpc.ServerStream
	ctx     context.Context
	payload []byte
}

func (s *agentStream) Context() context.Context { return s.ctx }
func (s *agentStream) Send(m *agentnav1.PayloadOrChallengeResponse) error {
	s.payload = m.GetPayload()
	return nil
}
func (s *agentStream) Recv() (*agentnav1.Challenge, error) {
	return nil, errors.New("aws_iid has no challenge")
}

type serverStream struct {
	grpc.ServerStream
	ctx  context.Context
	req  *servernav1.AttestRequest
	resp *servernav1.AttestResponse
}

func (s *serverStream) Context() context.Context { return s.ctx }
func (s *serverStream) Recv() (*servernav1.AttestRequest, error) {
	if s.req == nil {
		return nil, errors.New("no second request")
	}
	r := s.req
	s.req = nil
	return r, nil
}
func (s *serverStream) Send(m *servernav1.AttestResponse) error {
	s.resp = m
	return nil
}
