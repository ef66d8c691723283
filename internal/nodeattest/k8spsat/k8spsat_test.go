package k8spsat_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
	"github.com/arborid/arbor/internal/selector"
)

func noChallenge(t testing.TB) nodeattest.ChallengeFunc {
	return func(context.Context, []byte) ([]byte, error) {
		t.Error("k8s_psat sent a challenge")
		return nil, errors.New("no challenge expected")
	}
}

func sel(value string) selector.Selector { return selector.Selector{Type: "k8s_psat", Value: value} }

// TestAttest: an agent's payload, as the agent half writes it, attests with
// the agent ID of its node and every SPIRE selector; labels only for the
// allowed keys.
func TestAttest(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": c.clusterConfig()}, Now: clock}, td))
	if a.Type() != "k8s_psat" {
		t.Errorf("Type() = %q, want k8s_psat", a.Type())
	}

	res, err := a.Attest(testContext(t), payload(t, "prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{})), noChallenge(t))
	if err != nil {
		t.Fatalf("Attest() = %v", err)
	}
	if got, want := res.AgentID.String(), "spiffe://example.org/spire/agent/k8s_psat/prod/"+defaultAgent.nodeUID; got != want {
		t.Errorf("agent ID = %q, want %q", got, want)
	}
	want := []selector.Selector{
		sel("agent_node_ip:10.0.0.5"),
		sel("agent_node_label:kubernetes.io/hostname:worker-1"),
		sel("agent_node_label:topology.kubernetes.io/zone:eu-west-1a"),
		sel("agent_node_name:worker-1"),
		sel("agent_node_uid:" + defaultAgent.nodeUID),
		sel("agent_ns:spire"),
		sel("agent_pod_label:app:spire-agent"),
		sel("agent_pod_name:spire-agent-x7k2p"),
		sel("agent_pod_uid:" + defaultAgent.uid),
		sel("agent_sa:spire-agent"),
		sel("cluster:prod"),
	}
	if diff := cmp.Diff(want, res.Selectors); diff != "" {
		t.Errorf("selectors mismatch (-want +got):\n%s", diff)
	}
	if !res.CanReattest || res.FirstUse || res.JoinToken != "" {
		t.Errorf("Attest() = %+v, want re-attestable, not first-use, no join token", res)
	}
	if st := c.api.Stats(); st.TokenReviews != 1 || st.PodGets != 1 || st.NodeGets != 1 || st.Unauthorized != 0 {
		t.Errorf("API server stats = %+v, want one TokenReview, pod and node get, nothing unauthorized", st)
	}

	// Without allowed label keys no label becomes a selector.
	cfg := c.clusterConfig()
	cfg.AllowedNodeLabelKeys, cfg.AllowedPodLabelKeys = nil, nil
	bare := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": cfg}}, td))
	res, err = bare.Attest(testContext(t), payload(t, "prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{})), noChallenge(t))
	if err != nil {
		t.Fatalf("Attest() without label keys = %v", err)
	}
	for _, s := range res.Selectors {
		if strings.Contains(s.Value, "_label:") {
			t.Errorf("selector %s without allowed label keys", s)
		}
	}
	if len(res.Selectors) != 8 {
		t.Errorf("Attest() without label keys: %d selectors, want the 8 that are not labels: %v", len(res.Selectors), res.Selectors)
	}
}

// TestAttestRefusals: every way an attestation is refused, with the error
// class the API layer turns into a status and a message that says why.
func TestAttestRefusals(t *testing.T) {
	prod := newCluster(t, k8spsattest.Config{})
	prod.add(defaultAgent)
	other := newCluster(t, k8spsattest.Config{})
	other.add(defaultAgent)
	unaware := newCluster(t, k8spsattest.Config{AudienceUnaware: true})
	unaware.add(defaultAgent)

	recreated := defaultAgent
	recreated.name = "spire-agent-recreated"
	prod.add(recreated)
	recreatedToken := prod.token(t, recreated, k8spsattest.TokenOptions{})
	recreated.uid = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
	prod.add(recreated)

	unscheduled := defaultAgent
	unscheduled.name = "spire-agent-pending"
	unscheduled.uid = "11111111-2222-4333-8444-555555555555"
	prod.add(unscheduled)
	prod.api.SetPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: unscheduled.name, UID: "11111111-2222-4333-8444-555555555555"}})

	noPod := defaultAgent
	noPod.name = "spire-agent-gone"
	noPod.uid = "22222222-2222-4333-8444-555555555555"
	prod.add(noPod)
	noPodToken := prod.token(t, noPod, k8spsattest.TokenOptions{})
	prod.api.DeletePod("spire", noPod.name)

	noNode := defaultAgent
	noNode.name = "spire-agent-orphan"
	noNode.uid = "33333333-2222-4333-8444-555555555555"
	noNode.node = "worker-deleted"
	noNode.nodeUID = "44444444-2222-4333-8444-555555555555"
	prod.add(noNode)
	noNodeToken := prod.token(t, noNode, k8spsattest.TokenOptions{})
	prod.api.DeleteNode(noNode.node)

	badUID := defaultAgent
	badUID.name = "spire-agent-baduid"
	badUID.uid = "55555555-2222-4333-8444-555555555555"
	badUID.node = "worker-baduid"
	badUID.nodeUID = "a/../b"
	prod.add(badUID)

	revoked := prod.token(t, defaultAgent, k8spsattest.TokenOptions{})
	prod.api.Revoke(revoked)

	clusters := map[string]k8spsat.ClusterConfig{
		"prod":    prod.clusterConfig(),
		"staging": other.clusterConfig(),
		"unaware": unaware.clusterConfig(),
	}
	a := must(k8spsat.New(k8spsat.Config{Clusters: clusters, Now: clock}, td))

	tests := []struct {
		name    string
		payload []byte
		want    error
		msg     string
	}{
		{"unknown cluster", payload(t, "dev", prod.token(t, defaultAgent, k8spsattest.TokenOptions{})), nodeattest.ErrDenied, `cluster "dev" is not configured`},
		{"unauthenticated token", payload(t, "prod", "not-a-token-this-cluster-issued"), nodeattest.ErrDenied, `token not authenticated by the TokenReview API of cluster "prod"`},
		{"token of another cluster", payload(t, "prod", other.token(t, defaultAgent, k8spsattest.TokenOptions{})), nodeattest.ErrDenied, `token not authenticated by the TokenReview API of cluster "prod"`},
		{"wrong audience", payload(t, "prod", prod.token(t, defaultAgent, k8spsattest.TokenOptions{Audiences: []string{"vault"}})), nodeattest.ErrDenied, `token not authenticated by the TokenReview API of cluster "prod"`},
		{"audience not validated by the API server", payload(t, "unaware", unaware.token(t, defaultAgent, k8spsattest.TokenOptions{})), nodeattest.ErrDenied, `authenticated the token for audiences ["https://kubernetes.default.svc.cluster.local"], none of the configured ["spire-server"]`},
		{"expired", payload(t, "prod", prod.token(t, defaultAgent, k8spsattest.TokenOptions{TTL: -time.Minute})), nodeattest.ErrDenied, "it expired at 2026-11-01T11:59:00Z"},
		{"revoked", payload(t, "prod", revoked), nodeattest.ErrDenied, `token not authenticated by the TokenReview API of cluster "prod"`},
		{"service account not allowed", payload(t, "prod", prod.token(t, defaultAgent, k8spsattest.TokenOptions{ServiceAccount: "default"})), nodeattest.ErrDenied, `service account "spire:default" is not allowed in cluster "prod"`},
		{"namespace not allowed", payload(t, "prod", prod.token(t, defaultAgent, k8spsattest.TokenOptions{Namespace: "kube-system"})), nodeattest.ErrDenied, `service account "kube-system:spire-agent" is not allowed in cluster "prod"`},
		{"token bound to no pod", payload(t, "prod", prod.token(t, defaultAgent, k8spsattest.TokenOptions{PodName: "no-such-pod"})), nodeattest.ErrDenied, "is not bound to a pod"},
		{"pod missing", payload(t, "prod", noPodToken), nodeattest.ErrDenied, `pod spire/spire-agent-gone not found in cluster "prod"`},
		{"pod recreated", payload(t, "prod", recreatedToken), nodeattest.ErrDenied, `has UID "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", the token is bound to UID`},
		{"pod not scheduled", payload(t, "prod", prod.token(t, unscheduled, k8spsattest.TokenOptions{})), nodeattest.ErrDenied, "is not scheduled on a node"},
		{"node missing", payload(t, "prod", noNodeToken), nodeattest.ErrDenied, `node "worker-deleted" of pod spire/spire-agent-orphan not found in cluster "prod"`},
		{"node UID not a path segment", payload(t, "prod", prod.token(t, badUID, k8spsattest.TokenOptions{})), nodeattest.ErrDenied, `has UID "a/../b", which cannot end an agent ID`},
		{"not JSON", []byte("cluster=prod"), nodeattest.ErrInvalid, "decoding payload"},
		{"no cluster", []byte(`{"token":"x"}`), nodeattest.ErrInvalid, "payload has no cluster"},
		{"no token", []byte(`{"cluster":"prod"}`), nodeattest.ErrInvalid, "payload has no token"},
		{"payload too large", []byte(`{"cluster":"prod","token":"` + strings.Repeat("a", 64<<10) + `"}`), nodeattest.ErrInvalid, "at most 65536 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := a.Attest(testContext(t), tt.payload, noChallenge(t))
			if !errors.Is(err, tt.want) || res != nil {
				t.Fatalf("Attest() = %+v, %v; want %v", res, err, tt.want)
			}
			if other := map[error]error{nodeattest.ErrDenied: nodeattest.ErrInvalid, nodeattest.ErrInvalid: nodeattest.ErrDenied}[tt.want]; errors.Is(err, other) {
				t.Errorf("Attest() = %v, both ErrInvalid and ErrDenied", err)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "k8s_psat: ") {
				t.Errorf("Attest() = %q, want a k8s_psat: error containing %q", err, tt.msg)
			}
		})
	}

	// No refusal leaks the token under review.
	expired := prod.token(t, defaultAgent, k8spsattest.TokenOptions{TTL: -time.Minute})
	if _, err := a.Attest(testContext(t), payload(t, "prod", expired), noChallenge(t)); err == nil || strings.Contains(err.Error(), expired) {
		t.Errorf("Attest(expired token) = %v, want a refusal that does not quote the token", err)
	}
}

// TestAttestUnknownClusterCallsNoAPIServer: a payload naming a cluster that
// is not configured costs no API call.
func TestAttestUnknownClusterCallsNoAPIServer(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": c.clusterConfig()}}, td))
	if _, err := a.Attest(testContext(t), payload(t, "Prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{})), noChallenge(t)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Fatalf("Attest(cluster Prod) = %v, want ErrDenied (names are case sensitive)", err)
	}
	if st := c.api.Stats(); st.TokenReviews+st.PodGets+st.NodeGets != 0 {
		t.Errorf("API server stats = %+v, want no call", st)
	}
}

// TestAttestAPIServerDown: an API server that cannot be reached is an
// internal failure, not a verdict on the agent, so its text stays on the
// server.
func TestAttestAPIServerDown(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": c.clusterConfig()}}, td))
	p := payload(t, "prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{}))
	c.api.Close()
	_, err := a.Attest(testContext(t), p, noChallenge(t))
	if err == nil || errors.Is(err, nodeattest.ErrDenied) || errors.Is(err, nodeattest.ErrInvalid) {
		t.Fatalf("Attest() with the API server down = %v, want an internal error", err)
	}
	if !strings.Contains(err.Error(), `TokenReview by cluster "prod"`) {
		t.Errorf("Attest() = %q, want it to name the failed TokenReview", err)
	}
}

// TestAttestWrongAPICredential: a kubeconfig whose bearer token the API
// server refuses fails every attestation as an internal error.
func TestAttestWrongAPICredential(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	other := newCluster(t, k8spsattest.Config{})
	cfg := c.clusterConfig()
	cfg.KubeConfigFile = rewriteKubeconfigServer(t, other.kubeconfig, c.api)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": cfg}}, td))
	_, err := a.Attest(testContext(t), payload(t, "prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{})), noChallenge(t))
	if err == nil || errors.Is(err, nodeattest.ErrDenied) || errors.Is(err, nodeattest.ErrInvalid) {
		t.Fatalf("Attest() with a refused API credential = %v, want an internal error", err)
	}
	if st := c.api.Stats(); st.Unauthorized == 0 {
		t.Errorf("API server stats = %+v, want the request refused as unauthorized", st)
	}
}

// TestAudience: the audience a TokenReview asks for, by configuration.
func TestAudience(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	tests := []struct {
		name     string
		audience []string
		tokenAud []string
		ok       bool
	}{
		{"default is spire-server", nil, []string{"spire-server"}, true},
		{"default refuses another audience", nil, []string{"arbor"}, false},
		{"configured audience", []string{"arbor", "spire"}, []string{"spire"}, true},
		{"configured audience refuses spire-server", []string{"arbor"}, []string{"spire-server"}, false},
		{"empty asks for the API server's own", []string{}, []string{k8spsattest.DefaultIssuer}, true},
		{"empty refuses spire-server", []string{}, []string{"spire-server"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := c.clusterConfig()
			cfg.Audience = tt.audience
			a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": cfg}}, td))
			_, err := a.Attest(testContext(t), payload(t, "prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{Audiences: tt.tokenAud})), noChallenge(t))
			if tt.ok && err != nil {
				t.Errorf("Attest(token for %q) with audience %q = %v, want success", tt.tokenAud, tt.audience, err)
			}
			if !tt.ok && !errors.Is(err, nodeattest.ErrDenied) {
				t.Errorf("Attest(token for %q) with audience %q = %v, want ErrDenied", tt.tokenAud, tt.audience, err)
			}
		})
	}
}

// TestNewRefusesBadConfig: a configuration that cannot work is refused when
// it is given, naming the cluster and the field.
func TestNewRefusesBadConfig(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	good := c.clusterConfig()
	with := func(f func(*k8spsat.ClusterConfig)) k8spsat.ClusterConfig {
		cfg := good
		f(&cfg)
		return cfg
	}
	tests := []struct {
		name     string
		clusters map[string]k8spsat.ClusterConfig
		want     string
	}{
		{"empty cluster name", map[string]k8spsat.ClusterConfig{"": good}, `cluster name "" cannot be a SPIFFE ID path segment`},
		{"cluster name with a slash", map[string]k8spsat.ClusterConfig{"a/b": good}, `cluster name "a/b" cannot be`},
		{"cluster name dot-dot", map[string]k8spsat.ClusterConfig{"..": good}, `cluster name ".." cannot be`},
		{"cluster name with a colon", map[string]k8spsat.ClusterConfig{"prod:1": good}, `cluster name "prod:1" cannot be`},
		{"no service account", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.ServiceAccountAllowList = nil })}, "service_account_allow_list needs at least one"},
		{"service account without namespace", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.ServiceAccountAllowList = []string{"spire-agent"} })}, `service account "spire-agent" is not namespace:name`},
		{"service account with two colons", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.ServiceAccountAllowList = []string{"a:b:c"} })}, `"a:b:c" is not namespace:name`},
		{"empty audience", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.Audience = []string{""} })}, "empty audience"},
		{"empty node label key", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.AllowedNodeLabelKeys = []string{""} })}, "allowed_node_label_keys"},
		{"empty pod label key", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.AllowedPodLabelKeys = []string{""} })}, "allowed_pod_label_keys"},
		{"missing kubeconfig", map[string]k8spsat.ClusterConfig{"prod": with(func(c *k8spsat.ClusterConfig) { c.KubeConfigFile = c.KubeConfigFile + ".missing" })}, `cluster "prod": kube_config_file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := k8spsat.New(k8spsat.Config{Clusters: tt.clusters}, td)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "k8s_psat: ") {
				t.Errorf("New() = %v, %v; want an error containing %q", a, err, tt.want)
			}
		})
	}
	if _, err := k8spsat.New(k8spsat.Config{}, spiffeid.TrustDomain{}); err == nil {
		t.Error("New() without a trust domain succeeded")
	}
	if a, err := k8spsat.New(k8spsat.Config{}, td); err != nil {
		t.Errorf("New() with no cluster = %v, want an attestor that accepts no agent yet", err)
	} else if _, err := a.Attest(testContext(t), []byte(`{"cluster":"prod","token":"t"}`), noChallenge(t)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("Attest() with no cluster configured = %v, want ErrDenied", err)
	}
}

// TestInClusterOutsideACluster: an empty kube_config_file means the
// server's own pod's service account, which a process outside a cluster
// does not have.
func TestInClusterOutsideACluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	cfg := k8spsat.ClusterConfig{ServiceAccountAllowList: []string{"spire:spire-agent"}}
	_, err := k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": cfg}}, td)
	if err == nil || !strings.Contains(err.Error(), "in-cluster configuration") {
		t.Errorf("New() with in-cluster configuration outside a cluster = %v, want an error naming it", err)
	}
}
