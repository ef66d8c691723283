// Package k8spsat attests agents that run as Kubernetes pods with a
// projected service account token (SPIRE's "k8s_psat" attestation type): the
// agent sends its cluster's name and the token, and the server asks that
// cluster's API server to review the token (TokenReview), then reads the
// token's pod and the pod's node to name the agent after the node and
// describe it with selectors. Both halves live here — the server's Attestor
// and the agent's AgentPayload — speaking SPIRE's JSON, so either side can be
// a real SPIRE v1.13 peer.
//
// The API server is the only judge of the token: the attestor never trusts
// a claim it reads from the token itself, and takes the identity from the
// TokenReview's answer and the objects it reads afterwards.
package k8spsat

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/selector"
)

// Type is the attestation data type, and the type of the selectors produced.
const Type = "k8s_psat"

// attestTimeout bounds one attestation: three API calls, each bounded by
// requestTimeout, and client-go's retries of them.
const attestTimeout = 30 * time.Second

// Keys of the user info extra the API server returns in a TokenReview of a
// token bound to a pod.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// defaultAudience is the audience a token must be for when a cluster
// configures none, as in SPIRE.
var defaultAudience = []string{"spire-server"}

// Config configures an Attestor. It must not be modified after New.
type Config struct {
	// Clusters maps a cluster name, as agents send it, to how its agents
	// are verified (SPIRE's clusters block). An empty map accepts no agent
	// until SetClusters adds a cluster. A name must be a valid SPIFFE ID
	// path segment (letters, digits, '.', '-', '_'), since it is one in the
	// agent ID.
	Clusters map[string]ClusterConfig
	// Now is the time against which a refused token's expiry is reported;
	// if nil, time.Now is used. It decides nothing: the API server does.
	Now func() time.Time
}

// ClusterConfig is one cluster's configuration, SPIRE's plugin_data for it.
// Its JSON form, with SPIRE's names, is what arbor's admin API reads and
// replaces a running server's clusters with; a null audience is the
// default one.
type ClusterConfig struct {
	// ServiceAccountAllowList holds the service accounts agents may run
	// as, each "namespace:name" (service_account_allow_list); at least one
	// is required.
	ServiceAccountAllowList []string `json:"service_account_allow_list"`
	// Audience lists the audiences the TokenReview asks for; the token
	// must be for at least one (audience). If nil, ["spire-server"]; if
	// empty but not nil, none are asked for and the API server checks its
	// own (its --api-audiences).
	Audience []string `json:"audience"`
	// KubeConfigFile is the kubeconfig with which to reach the cluster's
	// API server (kube_config_file); if empty, the server's own pod's
	// in-cluster service account is used. It is read when the cluster is
	// configured, by New or SetClusters.
	KubeConfigFile string `json:"kube_config_file,omitempty"`
	// AllowedNodeLabelKeys and AllowedPodLabelKeys name the node and pod
	// labels that become selectors (allowed_node_label_keys,
	// allowed_pod_label_keys); other labels are ignored.
	AllowedNodeLabelKeys []string `json:"allowed_node_label_keys,omitempty"`
	AllowedPodLabelKeys  []string `json:"allowed_pod_label_keys,omitempty"`
}

// Attestor verifies k8s_psat attestations on the server.
type Attestor struct {
	td       spiffeid.TrustDomain
	now      func() time.Time
	clusters atomic.Pointer[map[string]*cluster]
}

var _ nodeattest.Attestor = (*Attestor)(nil)

// cluster is a validated ClusterConfig with its API client.
type cluster struct {
	name            string
	serviceAccounts map[string]bool
	audience        []string
	nodeLabels      map[string]bool
	podLabels       map[string]bool
	client          *kubeClient
	config          ClusterConfig // as given, for Clusters
}

// New returns an Attestor for the agents of trust domain td in the clusters
// of cfg, with one API client per cluster.
func New(cfg Config, td spiffeid.TrustDomain) (*Attestor, error) {
	if td.IsZero() {
		return nil, errors.New("k8s_psat: trust domain is required")
	}
	a := &Attestor{td: td, now: cfg.Now}
	if a.now == nil {
		a.now = time.Now
	}
	if err := a.SetClusters(cfg.Clusters); err != nil {
		return nil, err
	}
	return a, nil
}

// SetClusters replaces the configured clusters while the Attestor is in
// use: clusters can be added, changed and removed without a restart. It
// validates every cluster and builds its API client (reading its
// kubeconfig anew) before it changes anything, so a refused set leaves the
// clusters as they were. Attestations already under way finish with the
// clusters they started with; later ones see the new set.
func (a *Attestor) SetClusters(clusters map[string]ClusterConfig) error {
	next := make(map[string]*cluster, len(clusters))
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		c, err := newCluster(name, clusters[name])
		if err != nil {
			for _, built := range next {
				built.client.http.CloseIdleConnections()
			}
			return err
		}
		next[name] = c
	}
	if old := a.clusters.Swap(&next); old != nil {
		for _, c := range *old {
			c.client.http.CloseIdleConnections()
		}
	}
	return nil
}

func newCluster(name string, cfg ClusterConfig) (*cluster, error) {
	if err := spiffeid.ValidatePathSegment(name); err != nil {
		return nil, fmt.Errorf("k8s_psat: cluster name %q cannot be a SPIFFE ID path segment: %v", name, err)
	}
	c := &cluster{
		name:            name,
		config:          cloneClusterConfig(cfg),
		serviceAccounts: map[string]bool{},
		audience:        slices.Clone(cfg.Audience),
		nodeLabels:      map[string]bool{},
		podLabels:       map[string]bool{},
	}
	if cfg.Audience == nil {
		c.audience = slices.Clone(defaultAudience)
	}
	for _, aud := range c.audience {
		if aud == "" {
			return nil, fmt.Errorf("k8s_psat: cluster %q: empty audience", name)
		}
	}
	if len(cfg.ServiceAccountAllowList) == 0 {
		return nil, fmt.Errorf("k8s_psat: cluster %q: service_account_allow_list needs at least one service account", name)
	}
	for _, sa := range cfg.ServiceAccountAllowList {
		ns, n, ok := strings.Cut(sa, ":")
		if !ok || ns == "" || n == "" || strings.Contains(n, ":") {
			return nil, fmt.Errorf("k8s_psat: cluster %q: service account %q is not namespace:name", name, sa)
		}
		c.serviceAccounts[sa] = true
	}
	for _, k := range cfg.AllowedNodeLabelKeys {
		if k == "" {
			return nil, fmt.Errorf("k8s_psat: cluster %q: empty key in allowed_node_label_keys", name)
		}
		c.nodeLabels[k] = true
	}
	for _, k := range cfg.AllowedPodLabelKeys {
		if k == "" {
			return nil, fmt.Errorf("k8s_psat: cluster %q: empty key in allowed_pod_label_keys", name)
		}
		c.podLabels[k] = true
	}
	client, err := newKubeClient(cfg.KubeConfigFile)
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: cluster %q: %w", name, err)
	}
	c.client = client
	return c, nil
}

// Clusters returns the configured clusters, as New or the last SetClusters
// that succeeded was given them (a copy).
func (a *Attestor) Clusters() map[string]ClusterConfig {
	cur := *a.clusters.Load()
	out := make(map[string]ClusterConfig, len(cur))
	for name, c := range cur {
		out[name] = cloneClusterConfig(c.config)
	}
	return out
}

func cloneClusterConfig(c ClusterConfig) ClusterConfig {
	c.ServiceAccountAllowList = slices.Clone(c.ServiceAccountAllowList)
	c.Audience = slices.Clone(c.Audience)
	c.AllowedNodeLabelKeys = slices.Clone(c.AllowedNodeLabelKeys)
	c.AllowedPodLabelKeys = slices.Clone(c.AllowedPodLabelKeys)
	return c
}

// Type returns "k8s_psat".
func (a *Attestor) Type() string { return Type }

// Attest verifies the agent's token with a TokenReview by its cluster's API
// server — authenticated, for one of the cluster's audiences, of an allowed
// service account, bound to a pod — then reads that pod and its node, and
// returns the agent ID spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node
// UID> with SPIRE's selectors:
//
//	k8s_psat:cluster:<cluster>
//	k8s_psat:agent_ns:<service account namespace>
//	k8s_psat:agent_sa:<service account name>
//	k8s_psat:agent_pod_name:<pod name>
//	k8s_psat:agent_pod_uid:<pod UID>
//	k8s_psat:agent_node_ip:<the pod's status.hostIP>
//	k8s_psat:agent_node_name:<the pod's spec.nodeName>
//	k8s_psat:agent_node_uid:<node UID>
//	k8s_psat:agent_node_label:<key>:<value>   (each allowed node label)
//	k8s_psat:agent_pod_label:<key>:<value>    (each allowed pod label)
//
// No challenge is sent. The agent can re-attest with a fresh token of the
// same pod.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	data, err := parsePayload(payload)
	if err != nil {
		return nil, err
	}
	c := (*a.clusters.Load())[data.Cluster]
	if c == nil {
		return nil, fmt.Errorf("k8s_psat: %w: cluster %.64q is not configured", nodeattest.ErrDenied, data.Cluster)
	}
	ctx, cancel := context.WithTimeout(ctx, attestTimeout)
	defer cancel()

	status, err := c.reviewToken(ctx, data.Token)
	if err != nil {
		return nil, err
	}
	if !status.Authenticated || status.Error != "" {
		msg := fmt.Sprintf("token not authenticated by the TokenReview API of cluster %q", c.name)
		if exp, ok := unverifiedExpiry(data.Token); ok && !a.now().Before(exp) {
			msg += fmt.Sprintf(": it expired at %s", exp.Format(time.RFC3339))
		}
		return nil, fmt.Errorf("k8s_psat: %w: %s", nodeattest.ErrDenied, msg)
	}
	if len(c.audience) > 0 && !slices.ContainsFunc(c.audience, func(aud string) bool { return slices.Contains(status.Audiences, aud) }) {
		return nil, fmt.Errorf("k8s_psat: %w: the TokenReview API of cluster %q authenticated the token for audiences %q, none of the configured %q",
			nodeattest.ErrDenied, c.name, status.Audiences, c.audience)
	}
	namespace, serviceAccount, ok := serviceAccountOf(status.User.Username)
	if !ok {
		return nil, fmt.Errorf("k8s_psat: %w: token of cluster %q is not a service account's (user %q)", nodeattest.ErrDenied, c.name, status.User.Username)
	}
	if !c.serviceAccounts[namespace+":"+serviceAccount] {
		return nil, fmt.Errorf("k8s_psat: %w: service account %q is not allowed in cluster %q", nodeattest.ErrDenied, namespace+":"+serviceAccount, c.name)
	}
	podName, okName := oneExtra(status.User, extraPodName)
	podUID, okUID := oneExtra(status.User, extraPodUID)
	if !okName || !okUID {
		return nil, fmt.Errorf("k8s_psat: %w: token of service account %q in cluster %q is not bound to a pod (no single %s and %s in the TokenReview's user info)",
			nodeattest.ErrDenied, namespace+":"+serviceAccount, c.name, extraPodName, extraPodUID)
	}

	pod, err := c.client.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("k8s_psat: %w: pod %s/%s not found in cluster %q", nodeattest.ErrDenied, namespace, podName, c.name)
	case err != nil:
		return nil, fmt.Errorf("k8s_psat: getting pod %s/%s from cluster %q: %w", namespace, podName, c.name, err)
	}
	// The token is bound to one pod; a pod of the same name created since
	// is another.
	if string(pod.UID) != podUID {
		return nil, fmt.Errorf("k8s_psat: %w: pod %s/%s in cluster %q has UID %q, the token is bound to UID %q",
			nodeattest.ErrDenied, namespace, podName, c.name, pod.UID, podUID)
	}
	nodeName := pod.Spec.NodeName
	if nodeName == "" {
		return nil, fmt.Errorf("k8s_psat: %w: pod %s/%s in cluster %q is not scheduled on a node", nodeattest.ErrDenied, namespace, podName, c.name)
	}
	node, err := c.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("k8s_psat: %w: node %q of pod %s/%s not found in cluster %q", nodeattest.ErrDenied, nodeName, namespace, podName, c.name)
	case err != nil:
		return nil, fmt.Errorf("k8s_psat: getting node %q from cluster %q: %w", nodeName, c.name, err)
	}
	nodeUID := string(node.UID)
	agentID, err := spiffeid.FromSegments(a.td, "spire", "agent", Type, c.name, nodeUID)
	if err == nil {
		err = idpolicy.AgentID(a.td, agentID)
	}
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: %w: node %q of cluster %q has UID %q, which cannot end an agent ID: %v", nodeattest.ErrDenied, nodeName, c.name, nodeUID, err)
	}

	sels := []selector.Selector{
		{Type: Type, Value: "cluster:" + c.name},
		{Type: Type, Value: "agent_ns:" + namespace},
		{Type: Type, Value: "agent_sa:" + serviceAccount},
		{Type: Type, Value: "agent_pod_name:" + podName},
		{Type: Type, Value: "agent_pod_uid:" + podUID},
		{Type: Type, Value: "agent_node_ip:" + pod.Status.HostIP},
		{Type: Type, Value: "agent_node_name:" + nodeName},
		{Type: Type, Value: "agent_node_uid:" + nodeUID},
	}
	for k, v := range node.Labels {
		if c.nodeLabels[k] {
			sels = append(sels, selector.Selector{Type: Type, Value: "agent_node_label:" + k + ":" + v})
		}
	}
	for k, v := range pod.Labels {
		if c.podLabels[k] {
			sels = append(sels, selector.Selector{Type: Type, Value: "agent_pod_label:" + k + ":" + v})
		}
	}
	return &nodeattest.Result{
		AgentID:     agentID,
		Selectors:   selector.Sorted(sels),
		CanReattest: true,
	}, nil
}

// reviewToken asks the cluster's API server to review token for the
// cluster's audiences. An error is a failed call, not a refused token.
func (c *cluster) reviewToken(ctx context.Context, token string) (*authnv1.TokenReviewStatus, error) {
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: c.audience}}
	resp, err := c.client.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: TokenReview by cluster %q: %w", c.name, err)
	}
	return &resp.Status, nil
}

// serviceAccountOf splits a service account's username,
// system:serviceaccount:<namespace>:<name>.
func serviceAccountOf(username string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}

// oneExtra returns the single non-empty value of key in the user's extra.
func oneExtra(user authnv1.UserInfo, key string) (string, bool) {
	v := user.Extra[key]
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}
