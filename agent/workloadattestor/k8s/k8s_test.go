package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/arborid/arbor/agent/workloadattestor/cgroup"
	"github.com/arborid/arbor/internal/selector"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newAttestor(t *testing.T, cfg Config) *Attestor {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func values(sels []selector.Selector) []string {
	var out []string
	for _, s := range sels {
		if s.Type != SelectorType {
			out = append(out, "WRONG TYPE "+s.String())
			continue
		}
		out = append(out, s.Value)
	}
	return out
}

// The selectors of each container of a pod, through the kubelet's secure
// port with the service account token: SPIRE's pod selectors (images by ID
// and by name, labels, owners) and the container's own.
func TestAttestSelectors(t *testing.T) {
	k := newFakeKubelet(t, webPod())
	cfg := k.config(t)
	a := newAttestor(t, cfg)
	pod := []string{
		"sa:web-sa", "ns:shop", "node-name:node-1", "pod-uid:" + podUID, "pod-name:web-7d4b9c-x2x9q",
		"pod-image-count:2", "pod-init-image-count:1",
		"pod-image:docker.io/envoyproxy/envoy@sha256:3333", "pod-image:envoyproxy/envoy:v1.29.1",
		"pod-image:registry.example/web:2.1", "pod-image:registry.example/web@sha256:2222",
		"pod-init-image:registry.example/migrate:1.0", "pod-init-image:registry.example/migrate@sha256:1111",
		"pod-label:app:web", "pod-label:pod-template-hash:7d4b9c",
		"pod-owner:ReplicaSet:web-7d4b9c", "pod-owner-uid:ReplicaSet:316ea285-b878-4d20-a9fe-2e1c79b0f083",
	}
	for _, tc := range []struct {
		name, containerID string
		want              []string
	}{
		{"web", webID, append(append([]string(nil), pod...),
			"container-name:web", "container-image:registry.example/web:2.1", "container-image:registry.example/web@sha256:2222")},
		{"sidecar", sidecarID, append(append([]string(nil), pod...),
			"container-name:sidecar", "container-image:docker.io/envoyproxy/envoy@sha256:3333", "container-image:envoyproxy/envoy:v1.29.1")},
		{"init container", initID, append(append([]string(nil), pod...),
			"container-name:migrate", "container-image:registry.example/migrate:1.0", "container-image:registry.example/migrate@sha256:1111")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, tc.containerID))
			got, err := a.Attest(testCtx(t), testPID)
			if err != nil {
				t.Fatalf("Attest = %v", err)
			}
			if diff := cmp.Diff(tc.want, values(got)); diff != "" {
				t.Errorf("Attest selectors (-want +got):\n%s", diff)
			}
		})
	}
	for i, h := range k.auth() {
		if h != "Bearer "+testToken {
			t.Errorf("request %d Authorization = %q, want the token", i, h)
		}
	}
}

// A process in no container gets no selectors and no error, without asking
// the kubelet; one whose pid has no cgroup file is an ErrNoProcess.
func TestAttestOutsideContainer(t *testing.T) {
	k := newFakeKubelet(t, webPod())
	cfg := k.config(t)
	a := newAttestor(t, cfg)
	stageCgroup(t, cfg.ProcRoot, testPID, onHost)
	got, err := a.Attest(testCtx(t), testPID)
	if err != nil || got != nil {
		t.Errorf("Attest(host process) = %v, %v; want no selectors, no error", got, err)
	}
	if _, err := a.Attest(testCtx(t), testPID+1); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Attest(missing pid) = %v, want ErrNoProcess", err)
	}
	if n := k.requests.Load(); n != 0 {
		t.Errorf("kubelet got %d requests, want 0", n)
	}
}

// A container the kubelet does not list yet is looked for again; it is
// found when it appears within MaxPollAttempts, and refused after them.
func TestAttestRetries(t *testing.T) {
	pending := webPod()
	pending.Status.ContainerStatuses = nil // created, not started
	k := newFakeKubelet(t)
	k.setPods(func(n int) []corev1.Pod {
		if n < 3 {
			return []corev1.Pod{pending}
		}
		return []corev1.Pod{webPod()}
	})
	cfg := k.config(t)
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID)
	if err != nil || !strings.Contains(strings.Join(values(got), " "), "container-name:web") {
		t.Fatalf("Attest = %v, %v; want web's selectors", values(got), err)
	}
	if n := k.requests.Load(); n != 3 {
		t.Errorf("kubelet got %d requests, want 3", n)
	}

	k.setPods(func(int) []corev1.Pod { return []corev1.Pod{pending} })
	k.requests.Store(0)
	cfg.MaxPollAttempts = 4
	got, err = newAttestor(t, cfg).Attest(testCtx(t), testPID)
	if !errors.Is(err, ErrContainerNotFound) || got != nil {
		t.Errorf("Attest(never listed) = %v, %v; want ErrContainerNotFound", got, err)
	}
	if n := k.requests.Load(); n != 4 {
		t.Errorf("kubelet got %d requests, want max_poll_attempts = 4", n)
	}

	// A cancelled caller stops the polling.
	cfg.MaxPollAttempts, cfg.PollRetryInterval = 1000, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := newAttestor(t, cfg).Attest(ctx, testPID); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Attest(deadline) = %v, want context.DeadlineExceeded", err)
	}
}

// Container IDs in a pod's status match the caller's only when they are
// exactly "<runtime>://<the caller's ID>"; the pod UID of the cgroups must be
// the pod's; and cgroups that cannot be read, or that name two containers,
// are refused.
func TestAttestContainerIDMatching(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cgroup  string
		status  string // the web container's ID in its status
		uid     string // the pod's UID
		wantErr error
	}{
		{"exact", inContainer(podUID, webID), "containerd://" + webID, podUID, nil},
		{"cri-o runtime", inContainer(podUID, webID), "cri-o://" + webID, podUID, nil},
		{"no runtime prefix", inContainer(podUID, webID), webID, podUID, ErrContainerNotFound},
		{"empty runtime", inContainer(podUID, webID), "://" + webID, podUID, ErrContainerNotFound},
		{"short ID", inContainer(podUID, webID), "containerd://" + webID[:12], podUID, ErrContainerNotFound},
		{"ID with a suffix", inContainer(podUID, webID), "containerd://" + webID + "0", podUID, ErrContainerNotFound},
		{"ID with a path", inContainer(podUID, webID), "containerd://" + webID + "/", podUID, ErrContainerNotFound},
		{"upper case", inContainer(podUID, webID), "containerd://" + strings.ToUpper(webID), podUID, ErrContainerNotFound},
		{"not started", inContainer(podUID, webID), "", podUID, ErrContainerNotFound},
		{"container listed under another pod UID", inContainer(podUID, webID), "containerd://" + webID, otherUID, ErrContainerNotFound},
		{"malformed cgroup file", "not a cgroup file\n", "containerd://" + webID, podUID, cgroup.ErrMalformed},
		{"cgroups naming two containers", inContainer(podUID, webID) + "1:cpu:/kubepods/pod" + podUID + "/" + sidecarID + "\n",
			"containerd://" + webID, podUID, cgroup.ErrConflict},
		{"63 hex digits are no container", inContainer(podUID, webID[1:]), "containerd://" + webID[1:], podUID, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := webPod()
			pod.UID = types.UID(tc.uid)
			pod.Status.ContainerStatuses[0].ContainerID = tc.status
			k := newFakeKubelet(t, pod)
			cfg := k.config(t)
			stageCgroup(t, cfg.ProcRoot, testPID, tc.cgroup)
			got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Attest = %v, %v; want %v", values(got), err, tc.wantErr)
			}
			if tc.wantErr != nil && got != nil {
				t.Errorf("Attest refused with selectors %v", values(got))
			}
		})
	}
}

// Without a pod UID in the cgroups (CRI-O under a cgroup namespace), two
// pods listing the caller's container are refused rather than guessed
// between.
func TestAttestAmbiguous(t *testing.T) {
	a, b := webPod(), webPod()
	b.UID, b.Name, b.Namespace = types.UID(otherUID), "impostor", "other"
	k := newFakeKubelet(t, a, b)
	cfg := k.config(t)
	stageCgroup(t, cfg.ProcRoot, testPID, "0::/../crio-"+webID+".scope\n")
	if got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Attest = %v, %v; want ErrAmbiguous", values(got), err)
	}
	// With the pod UID, the right pod is taken.
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID)
	if err != nil || !strings.Contains(strings.Join(values(got), " "), "ns:shop") {
		t.Errorf("Attest = %v, %v; want pod web's selectors", values(got), err)
	}
}

// disable_container_selectors: no container selectors, and a known pod is
// attested before its container is listed.
func TestAttestDisableContainerSelectors(t *testing.T) {
	pending := webPod()
	pending.Status.ContainerStatuses = nil
	k := newFakeKubelet(t, pending)
	cfg := k.config(t)
	cfg.DisableContainerSelectors = true
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID)
	if err != nil {
		t.Fatalf("Attest = %v", err)
	}
	joined := strings.Join(values(got), " ")
	if !strings.Contains(joined, "pod-name:web-7d4b9c-x2x9q") || strings.Contains(joined, "container-") {
		t.Errorf("Attest = %v; want pod selectors only", values(got))
	}
	if n := k.requests.Load(); n != 1 {
		t.Errorf("kubelet got %d requests, want 1", n)
	}
}

// Concurrent attestations share pod lists: a burst of callers costs the
// kubelet one request per half poll interval, not one each.
func TestAttestConcurrentShareThePodList(t *testing.T) {
	k := newFakeKubelet(t, webPod())
	cfg := k.config(t)
	cfg.PollRetryInterval = time.Minute // the list stays fresh for 30s
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	stageCgroup(t, cfg.ProcRoot, testPID+1, inContainer(podUID, sidecarID))
	a := newAttestor(t, cfg)
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			_, err := a.Attest(testCtx(t), int32(testPID+i%2))
			errs <- err
		}()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Errorf("Attest = %v", err)
		}
	}
	if n := k.requests.Load(); n != 1 {
		t.Errorf("50 concurrent attestations made %d kubelet requests, want 1", n)
	}
}
