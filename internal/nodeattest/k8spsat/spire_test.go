package k8spsat_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

// spireVectors is testdata/spire_v1.13.3_vectors.json, written by running
// SPIRE v1.13.3's own k8s_psat agent and server plugins against the fake API
// server (testdata/spirevectors, which also checked arbor against them
// live): the pod and node served, the cluster's configuration, and per case
// how the token was issued, what the token file held, the payload SPIRE's
// agent sent and SPIRE's server's verdict.
type spireVectors struct {
	SPIREVersion string        `json:"spire_version"`
	TrustDomain  string        `json:"trust_domain"`
	Cluster      string        `json:"cluster"`
	Pods         []corev1.Pod  `json:"pods"`
	Nodes        []corev1.Node `json:"nodes"`
	Config       struct {
		ServiceAccountAllowList []string `json:"service_account_allow_list"`
		AllowedNodeLabelKeys    []string `json:"allowed_node_label_keys"`
		AllowedPodLabelKeys     []string `json:"allowed_pod_label_keys"`
	} `json:"config"`
	Cases []struct {
		Name         string                   `json:"name"`
		AgentCluster string                   `json:"agent_cluster"`
		Token        k8spsattest.TokenOptions `json:"token"`
		TokenFile    string                   `json:"token_file"`
		Payload      json.RawMessage          `json:"payload"`
		SPIREAgent   *struct {
			AgentID     string   `json:"agent_id"`
			Selectors   []string `json:"selectors"`
			CanReattest bool     `json:"can_reattest"`
		} `json:"spire_agent"`
		SPIRERefusal string `json:"spire_refusal"`
	} `json:"cases"`
}

// TestSPIRECompatibility replays SPIRE's k8s_psat: the agent half must
// write SPIRE's agent's payload byte for byte from the same token file, and
// the server half, given the same pod, node and configuration, must accept
// what SPIRE's server accepted with the same agent ID, selectors and
// re-attestation, and refuse what it refused.
func TestSPIRECompatibility(t *testing.T) {
	data, err := os.ReadFile("testdata/spire_v1.13.3_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v spireVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 || len(v.Pods) == 0 || len(v.Nodes) == 0 {
		t.Fatal("no SPIRE vectors")
	}
	c := newCluster(t, k8spsattest.Config{})
	for i := range v.Nodes {
		c.api.SetNode(&v.Nodes[i])
	}
	for i := range v.Pods {
		c.api.SetPod(&v.Pods[i])
	}
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{v.Cluster: {
		ServiceAccountAllowList: v.Config.ServiceAccountAllowList,
		KubeConfigFile:          c.kubeconfig,
		AllowedNodeLabelKeys:    v.Config.AllowedNodeLabelKeys,
		AllowedPodLabelKeys:     v.Config.AllowedPodLabelKeys,
	}}, Now: clock}, spiffeid.RequireTrustDomainFromString(v.TrustDomain)))

	accepted, refused := 0, 0
	for _, tc := range v.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			dir := t.TempDir()
			spirePath := filepath.Join(dir, "spire-token")
			writeFile(t, spirePath, tc.TokenFile)
			got, err := k8spsat.AgentPayload(k8spsat.AgentConfig{Cluster: tc.AgentCluster, TokenPath: spirePath})
			if err != nil {
				t.Fatalf("AgentPayload() = %v", err)
			}
			// The vectors file is indented; SPIRE's agent sends compact JSON.
			var want bytes.Buffer
			if err := json.Compact(&want, tc.Payload); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("AgentPayload() = %s, want SPIRE's %s", got, want.Bytes())
			}

			// The recorded token was signed by that run's key; issue the
			// same token here and keep what the file added after it.
			token := c.token(t, defaultAgent, tc.Token)
			suffix := tc.TokenFile[len(strings.TrimRight(tc.TokenFile, " \t\r\n")):]
			res, err := a.Attest(testContext(t), payload(t, tc.AgentCluster, token+suffix), noChallenge(t))
			if tc.SPIREAgent == nil {
				refused++
				if err == nil {
					t.Fatalf("Attest() = %s, want a refusal as SPIRE's (%s)", res.AgentID, tc.SPIRERefusal)
				}
				return
			}
			accepted++
			if err != nil {
				t.Fatalf("Attest() = %v, want SPIRE's %s", err, tc.SPIREAgent.AgentID)
			}
			if got := res.AgentID.String(); got != tc.SPIREAgent.AgentID {
				t.Errorf("agent ID = %q, want SPIRE's %q", got, tc.SPIREAgent.AgentID)
			}
			var values []string
			for _, s := range res.Selectors {
				if s.Type != "k8s_psat" {
					t.Errorf("selector %s has type %q, want k8s_psat", s, s.Type)
				}
				values = append(values, s.Value)
			}
			if diff := cmp.Diff(tc.SPIREAgent.Selectors, values); diff != "" {
				t.Errorf("selectors differ from SPIRE's (-spire +arbor):\n%s", diff)
			}
			if res.CanReattest != tc.SPIREAgent.CanReattest {
				t.Errorf("CanReattest = %v, want SPIRE's %v", res.CanReattest, tc.SPIREAgent.CanReattest)
			}
		})
	}
	if accepted == 0 || refused == 0 {
		t.Errorf("vectors hold %d accepted and %d refused cases, want both kinds", accepted, refused)
	}
}
