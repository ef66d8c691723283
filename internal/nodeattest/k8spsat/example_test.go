package k8spsat_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

// An agent in pod spire/spire-agent-1 attests to a server configured for
// its cluster, "prod", whose API server is a fake here.
func Example() {
	api, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer api.Close()
	dir, err := os.MkdirTemp("", "k8spsat-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := api.WriteKubeconfig(kubeconfig); err != nil {
		log.Fatal(err)
	}
	api.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1", UID: "8d0a6c8e-4b1f-4f43-9c3e-2a7d5b9e1f60"}})
	api.SetPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "spire-agent-1", UID: "c2f1e0d9-8b7a-4c6d-9e5f-4a3b2c1d0e9f"},
		Spec:       corev1.PodSpec{NodeName: "worker-1"},
	})
	// The kubelet writes the pod's projected token to a file.
	token, err := api.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "spire-agent-1"})
	if err != nil {
		log.Fatal(err)
	}
	tokenPath := filepath.Join(dir, "spire-agent")
	if err := os.WriteFile(tokenPath, []byte(token), 0o600); err != nil {
		log.Fatal(err)
	}

	// The agent's half.
	payload, err := k8spsat.AgentPayload(k8spsat.AgentConfig{Cluster: "prod", TokenPath: tokenPath})
	if err != nil {
		log.Fatal(err)
	}

	// The server's half.
	a, err := k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{
		"prod": {ServiceAccountAllowList: []string{"spire:spire-agent"}, KubeConfigFile: kubeconfig},
	}}, spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.Attest(ctx, payload, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.AgentID)
	for _, s := range res.Selectors {
		fmt.Println(s)
	}
	// Output:
	// spiffe://example.org/spire/agent/k8s_psat/prod/8d0a6c8e-4b1f-4f43-9c3e-2a7d5b9e1f60
	// k8s_psat:agent_node_ip:
	// k8s_psat:agent_node_name:worker-1
	// k8s_psat:agent_node_uid:8d0a6c8e-4b1f-4f43-9c3e-2a7d5b9e1f60
	// k8s_psat:agent_ns:spire
	// k8s_psat:agent_pod_name:spire-agent-1
	// k8s_psat:agent_pod_uid:c2f1e0d9-8b7a-4c6d-9e5f-4a3b2c1d0e9f
	// k8s_psat:agent_sa:spire-agent
	// k8s_psat:cluster:prod
}
