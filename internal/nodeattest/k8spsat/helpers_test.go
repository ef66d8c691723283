package k8spsat_test

import (
	"context"
	"encoding/pem"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// now is the clock of every fake API server and attestor here.
var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cluster is a fake API server and a kubeconfig file pointing at it.
type cluster struct {
	api        *k8spsattest.Server
	kubeconfig string
}

func newCluster(t testing.TB, cfg k8spsattest.Config) *cluster {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = clock
	}
	api, err := k8spsattest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := api.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	return &cluster{api: api, kubeconfig: path}
}

// agentPod describes an agent's pod and node in a fake cluster.
type agentPod struct {
	namespace, name, uid string
	node, nodeUID        string
	hostIP               string
	podLabels            map[string]string
	nodeLabels           map[string]string
}

// defaultAgent is the agent most tests attest.
var defaultAgent = agentPod{
	namespace: "spire",
	name:      "spire-agent-x7k2p",
	uid:       "5f0c6a2e-8d43-4b8e-9a51-3c2d1e0f9b7a",
	node:      "worker-1",
	nodeUID:   "0b9e4c1d-2f3a-4e5b-8c6d-7e8f9a0b1c2d",
	hostIP:    "10.0.0.5",
	podLabels: map[string]string{"app": "spire-agent", "pod-template-hash": "6d9f8b7c5"},
	nodeLabels: map[string]string{
		"topology.kubernetes.io/zone": "eu-west-1a",
		"kubernetes.io/hostname":      "worker-1",
		"node.kubernetes.io/secret":   "do-not-select",
	},
}

// add stores the pod and its node in the fake.
func (c *cluster) add(a agentPod) {
	c.api.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.node, UID: types.UID(a.nodeUID), Labels: a.nodeLabels}})
	c.api.SetPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: a.namespace, Name: a.name, UID: types.UID(a.uid), Labels: a.podLabels},
		Spec:       corev1.PodSpec{NodeName: a.node, ServiceAccountName: "spire-agent"},
		Status:     corev1.PodStatus{HostIP: a.hostIP, Phase: corev1.PodRunning},
	})
}

// token issues a token of service account spire:spire-agent bound to a's
// pod, with opts overriding.
func (c *cluster) token(t testing.TB, a agentPod, opts k8spsattest.TokenOptions) string {
	t.Helper()
	if opts.Namespace == "" {
		opts.Namespace = a.namespace
	}
	if opts.ServiceAccount == "" {
		opts.ServiceAccount = "spire-agent"
	}
	if opts.PodName == "" {
		opts.PodName = a.name
	}
	tok, err := c.api.IssueToken(opts)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// clusterConfig is the usual configuration of a fake cluster.
func (c *cluster) clusterConfig() k8spsat.ClusterConfig {
	return k8spsat.ClusterConfig{
		ServiceAccountAllowList: []string{"spire:spire-agent"},
		KubeConfigFile:          c.kubeconfig,
		AllowedNodeLabelKeys:    []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"},
		AllowedPodLabelKeys:     []string{"app"},
	}
}

// payload is what an agent of cluster name sends with token, written to a
// token file and read back by the agent half.
func payload(t testing.TB, name, token string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, token)
	return must(k8spsat.AgentPayload(k8spsat.AgentConfig{Cluster: name, TokenPath: path}))
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
