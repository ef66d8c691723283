package k8s

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	podUID    = "2c48913c-b29f-11e7-9350-020968147796"
	otherUID  = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
	webID     = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	sidecarID = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
	initID    = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
	testToken = "agent-sa-token"
	testPID   = 4242
)

// fakeKubelet is a kubelet's secure port: GET /pods over TLS, answering the
// JSON of a v1 PodList to requests bearing its token and 401 Unauthorized to
// others, as a kubelet with --authentication-token-webhook does.
type fakeKubelet struct {
	srv   *httptest.Server
	token string

	mu sync.Mutex
	// pods returns the pod list of the n-th request (1-based).
	pods func(n int) []corev1.Pod
	// handler, when set, answers instead.
	handler http.HandlerFunc

	requests atomic.Int32
	// authHeaders records each request's Authorization header.
	authHeaders []string
}

func newFakeKubelet(t *testing.T, pods ...corev1.Pod) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{token: testToken, pods: func(int) []corev1.Pod { return pods }}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	k.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	k.srv.StartTLS()
	t.Cleanup(k.srv.Close)
	return k
}

// newPlainKubelet is a kubelet's read-only port: plain HTTP, no
// authentication.
func newPlainKubelet(t *testing.T, pods ...corev1.Pod) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{pods: func(int) []corev1.Pod { return pods }}
	k.srv = httptest.NewServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKubelet) setPods(f func(n int) []corev1.Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods = f
}

func (k *fakeKubelet) setHandler(h http.HandlerFunc) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.handler = h
}

func (k *fakeKubelet) serve(w http.ResponseWriter, r *http.Request) {
	n := int(k.requests.Add(1))
	k.mu.Lock()
	k.authHeaders = append(k.authHeaders, r.Header.Get("Authorization"))
	pods, handler := k.pods, k.handler
	k.mu.Unlock()
	if handler != nil {
		handler(w, r)
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/pods" {
		http.NotFound(w, r)
		return
	}
	if k.token != "" && r.Header.Get("Authorization") != "Bearer "+k.token {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(podListJSON(pods(n)))
}

func podListJSON(pods []corev1.Pod) []byte {
	b, err := json.Marshal(corev1.PodList{
		TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
		Items:    pods,
	})
	if err != nil {
		panic(err)
	}
	return b
}

func (k *fakeKubelet) port(t *testing.T) int {
	t.Helper()
	u, err := url.Parse(k.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (k *fakeKubelet) auth() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.authHeaders...)
}

// config returns a Config reaching k's secure port at 127.0.0.1 (a name
// in the test server's certificate) with k's CA and token written to
// files, and a proc root with no processes yet. Polls are 10ms apart, three
// at most.
func (k *fakeKubelet) config(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if c := k.srv.Certificate(); c != nil {
		writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	tok := filepath.Join(dir, "token")
	writeFile(t, tok, testToken+"\n")
	proc := filepath.Join(dir, "proc")
	if err := os.Mkdir(proc, 0o755); err != nil {
		t.Fatal(err)
	}
	return Config{
		KubeletSecurePort: k.port(t), NodeName: "127.0.0.1",
		KubeletCAPath: ca, TokenPath: tok,
		MaxPollAttempts: 3, PollRetryInterval: 10 * time.Millisecond,
		ProcRoot: proc,
		Getenv:   func(string) string { return "" },
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// stageCgroup writes procRoot/<pid>/cgroup.
func stageCgroup(t testing.TB, procRoot string, pid int, content string) {
	t.Helper()
	writeFile(t, filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"), content)
}

// inContainer is a cgroup v2 file of a burstable pod's container under
// containerd and the systemd driver, as the kernel shows it.
func inContainer(uid, containerID string) string {
	return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
		strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + containerID + ".scope\n"
}

// onHost is the cgroup file of a process in a login session.
const onHost = "0::/user.slice/user-1000.slice/session-2.scope\n"

// webPod is a Deployment's pod with an init container and two containers,
// web and sidecar, as the kubelet lists it once they run.
func webPod() corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-7d4b9c-x2x9q", Namespace: "shop", UID: types.UID(podUID),
			Labels: map[string]string{"app": "web", "pod-template-hash": "7d4b9c"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d4b9c",
				UID: "316ea285-b878-4d20-a9fe-2e1c79b0f083",
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web-sa", NodeName: "node-1",
			InitContainers: []corev1.Container{{Name: "migrate", Image: "registry.example/migrate:1.0"}},
			Containers: []corev1.Container{
				{Name: "web", Image: "registry.example/web:2.1"},
				{Name: "sidecar", Image: "envoyproxy/envoy:v1.29.1"},
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			InitContainerStatuses: []corev1.ContainerStatus{{
				Name: "migrate", ContainerID: "containerd://" + initID,
				Image: "registry.example/migrate:1.0", ImageID: "registry.example/migrate@sha256:1111",
			}},
			ContainerStatuses: []corev1.ContainerStatus{
				{
					Name: "web", ContainerID: "containerd://" + webID, Ready: true,
					Image: "registry.example/web:2.1", ImageID: "registry.example/web@sha256:2222",
				},
				{
					Name: "sidecar", ContainerID: "containerd://" + sidecarID, Ready: true,
					Image: "envoyproxy/envoy:v1.29.1", ImageID: "docker.io/envoyproxy/envoy@sha256:3333",
				},
			},
		},
	}
}
