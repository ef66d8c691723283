// Command spirevectors checks arbor's k8s_psat against SPIRE v1.13.3's own
// k8s_psat plugins and writes what SPIRE did as test vectors. It runs both
// against one fake API server (arbor's k8spsattest, which SPIRE's server
// plugin reaches through kube_config_file like any cluster): SPIRE's agent
// plugin and arbor's AgentPayload read the same token files, SPIRE's server
// plugin and arbor's Attestor verify the same tokens, and it fails when they
// disagree on a payload byte, an agent ID, a selector or whether to accept.
// The vectors record the pod and node served, each case's token options,
// SPIRE's payload and SPIRE's verdict, so that arbor's tests recreate the
// cases without SPIRE (spire_test.go).
//
// It lives under testdata (ignored by the go tool) with its own go.mod so
// that arbor never depends on SPIRE. Regenerate with:
//
//	cd internal/nodeattest/k8spsat/testdata/spirevectors
//	GOFLAGS=-mod=mod go run . > ../spire_v1.13.3_vectors.json
//
// SPIRE's plugins are compiled here with the client-go arbor requires (the
// go command takes the highest version asked for), not the one SPIRE
// v1.13.3 pins; the logic compared is SPIRE's.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentnav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	spireagent "github.com/spiffe/spire/pkg/agent/plugin/nodeattestor/k8spsat"
	spireserver "github.com/spiffe/spire/pkg/server/plugin/nodeattestor/k8spsat"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

// Vectors is the file written.
type Vectors struct {
	SPIREVersion string `json:"spire_version"`
	TrustDomain  string `json:"trust_domain"`
	// Cluster is the cluster configured on both servers, with Config.
	Cluster string        `json:"cluster"`
	Config  ClusterHCL    `json:"config"`
	Pods    []corev1.Pod  `json:"pods"`
	Nodes   []corev1.Node `json:"nodes"`
	Cases   []Case        `json:"cases"`
}

// ClusterHCL is the cluster's plugin_data, as both servers are given it.
type ClusterHCL struct {
	ServiceAccountAllowList []string `json:"service_account_allow_list"`
	AllowedNodeLabelKeys    []string `json:"allowed_node_label_keys"`
	AllowedPodLabelKeys     []string `json:"allowed_pod_label_keys"`
}

// Case is one attestation.
type Case struct {
	Name string `json:"name"`
	// AgentCluster is the cluster the agent is configured with.
	AgentCluster string `json:"agent_cluster"`
	// Token says how the token was issued; TokenFile is what the token
	// file held (the token, maybe with a suffix).
	Token      k8spsattest.TokenOptions `json:"token"`
	TokenFile  string                   `json:"token_file"`
	Payload    json.RawMessage          `json:"payload"`
	SPIREAgent *Attested                `json:"spire_agent,omitempty"`
	// SPIRERefusal is SPIRE's status code and message when it refused.
	SPIRERefusal string `json:"spire_refusal,omitempty"`
}

// Attested is what a server attested.
type Attested struct {
	AgentID     string   `json:"agent_id"`
	Selectors   []string `json:"selectors"`
	CanReattest bool     `json:"can_reattest"`
}

func main() {
	log.SetFlags(0)
	v, err := run()
	if err != nil {
		log.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
}

func run() (*Vectors, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "k8spsat-spirevectors")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	api, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		return nil, err
	}
	defer api.Close()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := api.WriteKubeconfig(kubeconfig); err != nil {
		return nil, err
	}
	v := &Vectors{
		SPIREVersion: "v1.13.3",
		TrustDomain:  "example.org",
		Cluster:      "prod",
		Config: ClusterHCL{
			ServiceAccountAllowList: []string{"spire:spire-agent"},
			AllowedNodeLabelKeys:    []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"},
			AllowedPodLabelKeys:     []string{"app"},
		},
		Nodes: []corev1.Node{{
			ObjectMeta: metav1.ObjectMeta{Name: "worker-1", UID: "0b9e4c1d-2f3a-4e5b-8c6d-7e8f9a0b1c2d", Labels: map[string]string{
				"topology.kubernetes.io/zone": "eu-west-1a", "kubernetes.io/hostname": "worker-1", "node.kubernetes.io/secret": "x",
			}},
		}},
		Pods: []corev1.Pod{
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "spire-agent-x7k2p", UID: "5f0c6a2e-8d43-4b8e-9a51-3c2d1e0f9b7a",
					Labels: map[string]string{"app": "spire-agent", "pod-template-hash": "6d9f8b7c5"}},
				Spec:   corev1.PodSpec{NodeName: "worker-1", ServiceAccountName: "spire-agent"},
				Status: corev1.PodStatus{HostIP: "10.0.0.5"},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "spire-agent-nolabels", UID: "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"},
				Spec:       corev1.PodSpec{NodeName: "worker-1", ServiceAccountName: "spire-agent"},
			},
		},
	}
	for i := range v.Nodes {
		api.SetNode(&v.Nodes[i])
	}
	for i := range v.Pods {
		api.SetPod(&v.Pods[i])
	}

	agentTok := k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "spire-agent-x7k2p"}
	with := func(f func(*k8spsattest.TokenOptions)) k8spsattest.TokenOptions {
		o := agentTok
		f(&o)
		return o
	}
	v.Cases = []Case{
		{Name: "agent pod", AgentCluster: "prod", Token: agentTok},
		{Name: "pod without labels or host IP", AgentCluster: "prod", Token: with(func(o *k8spsattest.TokenOptions) { o.PodName = "spire-agent-nolabels" })},
		{Name: "token file with a trailing newline (no API server accepts it)", AgentCluster: "prod", Token: agentTok},
		{Name: "unknown cluster", AgentCluster: "staging", Token: agentTok},
		{Name: "wrong audience", AgentCluster: "prod", Token: with(func(o *k8spsattest.TokenOptions) { o.Audiences = []string{"vault"} })},
		{Name: "expired", AgentCluster: "prod", Token: with(func(o *k8spsattest.TokenOptions) { o.TTL = -time.Minute })},
		{Name: "service account not allowed", AgentCluster: "prod", Token: with(func(o *k8spsattest.TokenOptions) { o.ServiceAccount = "default" })},
		{Name: "pod missing", AgentCluster: "prod", Token: with(func(o *k8spsattest.TokenOptions) {
			o.PodName = "spire-agent-gone"
			o.PodUID = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
		})},
	}

	hcl := fmt.Sprintf(`clusters = { %q = { service_account_allow_list = %s, kube_config_file = %q, allowed_node_label_keys = %s, allowed_pod_label_keys = %s } }`,
		v.Cluster, hclList(v.Config.ServiceAccountAllowList), kubeconfig, hclList(v.Config.AllowedNodeLabelKeys), hclList(v.Config.AllowedPodLabelKeys))
	spireServer := spireserver.New()
	if _, err := spireServer.Configure(ctx, &configv1.ConfigureRequest{
		HclConfiguration: hcl, CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: v.TrustDomain},
	}); err != nil {
		return nil, fmt.Errorf("configuring SPIRE's server plugin: %w", err)
	}
	arbor, err := k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{v.Cluster: {
		ServiceAccountAllowList: v.Config.ServiceAccountAllowList,
		KubeConfigFile:          kubeconfig,
		AllowedNodeLabelKeys:    v.Config.AllowedNodeLabelKeys,
		AllowedPodLabelKeys:     v.Config.AllowedPodLabelKeys,
	}}}, spiffeid.RequireTrustDomainFromString(v.TrustDomain))
	if err != nil {
		return nil, err
	}

	var mismatches []string
	for i := range v.Cases {
		c := &v.Cases[i]
		token, err := api.IssueToken(c.Token)
		if err != nil {
			return nil, err
		}
		c.TokenFile = token
		if strings.Contains(c.Name, "trailing newline") {
			c.TokenFile += "\n"
		}
		tokenPath := filepath.Join(dir, fmt.Sprintf("token%d", i))
		if err := os.WriteFile(tokenPath, []byte(c.TokenFile), 0o600); err != nil {
			return nil, err
		}

		spirePayload, err := spireAgentPayload(ctx, c.AgentCluster, tokenPath)
		if err != nil {
			return nil, fmt.Errorf("%s: SPIRE's agent: %w", c.Name, err)
		}
		c.Payload = spirePayload
		arborPayload, err := k8spsat.AgentPayload(k8spsat.AgentConfig{Cluster: c.AgentCluster, TokenPath: tokenPath})
		if err != nil {
			return nil, fmt.Errorf("%s: arbor's agent: %w", c.Name, err)
		}
		if string(arborPayload) != string(spirePayload) {
			mismatches = append(mismatches, fmt.Sprintf("%s: arbor's payload %s, SPIRE's %s", c.Name, arborPayload, spirePayload))
		}

		spireRes, spireErr := spireAttest(ctx, spireServer, spirePayload)
		if spireErr != nil {
			st := status.Convert(spireErr)
			c.SPIRERefusal = st.Code().String() + ": " + st.Message()
		} else {
			c.SPIREAgent = spireRes
		}
		arborRes, arborErr := arbor.Attest(ctx, spirePayload, nil)
		switch {
		case (spireErr == nil) != (arborErr == nil):
			mismatches = append(mismatches, fmt.Sprintf("%s: SPIRE: %v, arbor: %v", c.Name, spireErr, arborErr))
		case arborErr == nil:
			got := &Attested{AgentID: arborRes.AgentID.String(), CanReattest: arborRes.CanReattest}
			for _, s := range arborRes.Selectors {
				got.Selectors = append(got.Selectors, s.Value)
			}
			slices.Sort(got.Selectors)
			if g, w := fmt.Sprint(*got), fmt.Sprint(*spireRes); g != w {
				mismatches = append(mismatches, fmt.Sprintf("%s: arbor attested %s, SPIRE %s", c.Name, g, w))
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

func hclList(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

// spireAgentPayload runs SPIRE's agent plugin configured with cluster and
// tokenPath and returns the payload it sends.
func spireAgentPayload(ctx context.Context, cluster, tokenPath string) ([]byte, error) {
	p := spireagent.New()
	if _, err := p.Configure(ctx, &configv1.ConfigureRequest{
		HclConfiguration:  fmt.Sprintf("cluster = %q\ntoken_path = %q\n", cluster, tokenPath),
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
	}); err != nil {
		return nil, err
	}
	s := &agentStream{ctx: ctx}
	if err := p.AidAttestation(s); err != nil {
		return nil, err
	}
	return s.payload, nil
}

// spireAttest runs SPIRE's server plugin on payload.
func spireAttest(ctx context.Context, p *spireserver.AttestorPlugin, payload []byte) (*Attested, error) {
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
	return nil, errors.New("k8s_psat has no challenge")
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
