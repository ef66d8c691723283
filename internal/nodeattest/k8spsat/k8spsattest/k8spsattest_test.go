package k8spsattest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// TestServesClientGo: a client-go clientset with default settings — what
// a real spire-server's k8s_psat plugin builds from kube_config_file, which
// sends protobuf — reviews tokens and reads pods and nodes from the fake
// through the kubeconfig it writes, and gets real API errors.
func TestServesClientGo(t *testing.T) {
	api, err := k8spsattest.New(k8spsattest.Config{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := api.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	api.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-uid-1", Labels: map[string]string{"zone": "a"}}})
	api.SetPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "agent-1", UID: "pod-uid-1"},
		Spec:       corev1.PodSpec{NodeName: "n1"},
		Status:     corev1.PodStatus{HostIP: "192.0.2.1"},
	})
	token, err := api.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}

	review, err := cs.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{"spire-server"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview = %v", err)
	}
	st := review.Status
	if !st.Authenticated || st.Error != "" || st.User.Username != "system:serviceaccount:spire:spire-agent" {
		t.Errorf("TokenReview status = %+v, want spire:spire-agent authenticated", st)
	}
	if diff := cmp.Diff([]string{"spire-server"}, st.Audiences); diff != "" {
		t.Errorf("status.audiences (-want +got):\n%s", diff)
	}
	for key, want := range map[string]string{
		k8spsattest.ExtraPodName: "agent-1", k8spsattest.ExtraPodUID: "pod-uid-1",
		k8spsattest.ExtraNodeName: "n1", k8spsattest.ExtraNodeUID: "node-uid-1",
	} {
		if got := st.User.Extra[key]; len(got) != 1 || got[0] != want {
			t.Errorf("extra %s = %q, want [%q]", key, got, want)
		}
	}
	if id := st.User.Extra[k8spsattest.ExtraCredentialID]; len(id) != 1 || !strings.HasPrefix(id[0], "JTI=") {
		t.Errorf("extra %s = %q, want one JTI=", k8spsattest.ExtraCredentialID, id)
	}

	review, err = cs.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{"vault"}}}, metav1.CreateOptions{})
	if err != nil || review.Status.Authenticated || !strings.Contains(review.Status.Error, "token audiences") {
		t.Errorf("TokenReview for another audience = %+v, %v; want not authenticated, naming the audiences", review.Status, err)
	}

	pod, err := cs.CoreV1().Pods("spire").Get(ctx, "agent-1", metav1.GetOptions{})
	if err != nil || pod.UID != "pod-uid-1" || pod.Spec.NodeName != "n1" || pod.Status.HostIP != "192.0.2.1" {
		t.Errorf("get pod = %+v, %v", pod, err)
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil || node.UID != "node-uid-1" || node.Labels["zone"] != "a" {
		t.Errorf("get node = %+v, %v", node, err)
	}
	if _, err := cs.CoreV1().Pods("spire").Get(ctx, "agent-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get missing pod = %v, want NotFound", err)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get missing node = %v, want NotFound", err)
	}

	// Without the bearer token: 401.
	anon := *rc
	anon.BearerToken = ""
	anonCS, err := kubernetes.NewForConfig(&anon)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonCS.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("get node without the bearer token = %v, want Unauthorized", err)
	}
	if got := api.Stats(); got.TokenReviews != 2 || got.PodGets != 2 || got.NodeGets != 2 || got.Unauthorized != 1 {
		t.Errorf("Stats() = %+v, want 2 TokenReviews, pod and node gets, 1 unauthorized", got)
	}
}

// TestIssueToken: tokens are signed JWTs (RS256 with an RSA key, as most
// clusters sign) with the claims of a projected
// service account token, verifiable with the server's key.
func TestIssueToken(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	api, err := k8spsattest.New(k8spsattest.Config{Now: func() time.Time { return now }, SigningKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	api.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-uid-1"}})
	api.SetPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "agent-1", UID: "pod-uid-1"}, Spec: corev1.PodSpec{NodeName: "n1"}})
	token, err := api.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "agent-1", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("token is not a compact RS256 JWS: %v", err)
	}
	if _, err := jws.Verify(&key.PublicKey); err != nil {
		t.Errorf("token does not verify with the signing key: %v", err)
	}
	if kid := jws.Signatures[0].Header.KeyID; kid == "" {
		t.Error("token header has no kid")
	}
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	jti, _ := claims["jti"].(string)
	want := map[string]any{
		"aud": []any{"spire-server"},
		"exp": float64(now.Add(10 * time.Minute).Unix()),
		"iat": float64(now.Unix()),
		"nbf": float64(now.Unix()),
		"iss": k8spsattest.DefaultIssuer,
		"jti": jti,
		"sub": "system:serviceaccount:spire:spire-agent",
		"kubernetes.io": map[string]any{
			"namespace":      "spire",
			"pod":            map[string]any{"name": "agent-1", "uid": "pod-uid-1"},
			"node":           map[string]any{"name": "n1", "uid": "node-uid-1"},
			"serviceaccount": map[string]any{"name": "spire-agent", "uid": claims["kubernetes.io"].(map[string]any)["serviceaccount"].(map[string]any)["uid"]},
		},
	}
	if diff := cmp.Diff(want, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if len(jti) != 36 {
		t.Errorf("jti = %q, want a UUID", jti)
	}
	if _, err := api.IssueToken(k8spsattest.TokenOptions{Namespace: "spire"}); err == nil {
		t.Error("IssueToken without a service account succeeded")
	}
}
