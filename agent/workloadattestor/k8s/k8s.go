// Package k8s is the agent's "k8s" workload attestor: it finds the pod and
// container of a Workload API caller from its cgroups, looks the pod up in
// the node's kubelet (GET /pods) and returns the same selectors as SPIRE's
// k8s workload attestor (k8s:ns, k8s:sa, k8s:pod-name, k8s:container-name,
// ...), so registration entries written for spire-agent match on an arbor
// agent unchanged. Each Config field names the SPIRE plugin_data attribute it
// stands for.
//
// A process in no container gets no selectors and no error, as in SPIRE, so
// host processes can still be attested by the other attestors. A process in
// a container is looked for in the kubelet's pod list until its container
// shows up in a pod's status (MaxPollAttempts times, PollRetryInterval
// apart); a container that never shows up is an error wrapping
// ErrContainerNotFound, which fails the caller's attestation as SPIRE's
// "no selectors found after max poll attempts" does. That includes a
// container outside any pod of the node (a plain docker container).
//
// The kubelet is reached on its secure port (10250) with the agent's service
// account token or a client certificate, its serving certificate checked
// against the cluster CA; or on its read-only port over plain HTTP at
// 127.0.0.1. Responses are bounded (MaxResponseBytes), redirects are refused
// and every request has a deadline.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/cgroup"
	"github.com/arborid/arbor/internal/selector"
)

// SelectorType is the type of every selector this attestor produces.
const SelectorType = "k8s"

// Defaults, as SPIRE's.
const (
	DefaultSecurePort        = 10250
	DefaultMaxPollAttempts   = 60
	DefaultPollRetryInterval = 500 * time.Millisecond
	DefaultReloadInterval    = time.Minute
	DefaultKubeletCAPath     = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	DefaultTokenPath         = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultNodeNameEnv       = "MY_NODE_NAME"
	// DefaultMaxResponseBytes bounds the kubelet's pod list (arbor's own
	// limit; SPIRE has none): a node's 110 pods take a few MiB.
	DefaultMaxResponseBytes = 64 << 20
)

// requestTimeout bounds one request to the kubelet.
const requestTimeout = 10 * time.Second

var (
	// ErrKubelet is wrapped by every failure to get the pod list from the
	// kubelet: unreachable, refused (a *StatusError), redirected, too large
	// or not a pod list.
	ErrKubelet = errors.New("k8s: kubelet request failed")
	// ErrResponseTooLarge means the pod list exceeded MaxResponseBytes.
	ErrResponseTooLarge = errors.New("k8s: kubelet response too large")
	// ErrRedirect means the kubelet answered with a redirect, which is never
	// followed.
	ErrRedirect = errors.New("k8s: kubelet redirected the request")
	// ErrContainerNotFound means no pod's status listed the caller's
	// container within MaxPollAttempts.
	ErrContainerNotFound = errors.New("k8s: container not found in any pod")
	// ErrAmbiguous means two pods list the caller's container.
	ErrAmbiguous = errors.New("k8s: two pods hold the container")
	// ErrNoProcess means the caller's process does not exist (any more), or
	// its pid was reused while it was attested.
	ErrNoProcess = errors.New("k8s: process not found")
)

// StatusError is a kubelet answer other than 200 OK (401 for a wrong token,
// 403 for a service account without nodes/proxy access). It wraps ErrKubelet.
type StatusError struct {
	Code int
	// Body is the start of the response body, at most 256 bytes.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("k8s: kubelet answered %d %q", e.Code, e.Body)
}

// Unwrap returns ErrKubelet.
func (e *StatusError) Unwrap() error { return ErrKubelet }

// Config configures an Attestor. Each field names, in parentheses, the
// plugin_data attribute of SPIRE's k8s workload attestor it stands for. The
// zero value lists pods from the secure port of the kubelet at $MY_NODE_NAME
// (or 127.0.0.1) with the pod's service account token, checking the
// kubelet's certificate against the cluster CA. A Config must not be
// modified after New.
//
// SPIRE's use_new_container_locator and verbose_container_locator_logs have
// no field: arbor only has the new locator (package cgroup), so a SPIRE
// configuration setting use_new_container_locator = true carries over, and
// one setting it to false should be refused by whoever reads it.
type Config struct {
	// KubeletReadOnlyPort (kubelet_read_only_port), when set, lists pods
	// over plain HTTP from 127.0.0.1 on this port (typically 10255) instead
	// of the secure port. No credentials are sent and nothing authenticates
	// the kubelet: use it only where the read-only port is enabled.
	KubeletReadOnlyPort int
	// KubeletSecurePort (kubelet_secure_port) is the kubelet's HTTPS port;
	// zero means 10250. Setting both ports is an error.
	KubeletSecurePort int

	// KubeletCAPath (kubelet_ca_path) holds the PEM CA certificates that
	// sign the kubelet's serving certificate; "" means
	// DefaultKubeletCAPath.
	KubeletCAPath string
	// SkipKubeletVerification (skip_kubelet_verification) accepts any
	// kubelet certificate: then anything that answers on the node's port
	// 10250 chooses the caller's selectors.
	SkipKubeletVerification bool
	// TokenPath (token_path) is the bearer token file, re-read every
	// ReloadInterval; "" means DefaultTokenPath. Unused with a client
	// certificate or anonymous authentication.
	TokenPath string
	// CertificatePath (certificate_path) and PrivateKeyPath
	// (private_key_path) name a client certificate and key (PEM) to present
	// instead of a token; both or neither.
	CertificatePath string
	PrivateKeyPath  string
	// UseAnonymousAuthentication (use_anonymous_authentication) presents
	// no credentials; it wins over the token and certificate fields, as in
	// SPIRE.
	UseAnonymousAuthentication bool

	// NodeName (node_name) is the host the secure port is reached at. ""
	// means the environment variable NodeNameEnv, and if that is empty too,
	// 127.0.0.1, where the kubelet's certificate must name this machine's
	// host name (as SPIRE checks it).
	NodeName string
	// NodeNameEnv (node_name_env) is the environment variable holding the
	// node name; "" means DefaultNodeNameEnv (MY_NODE_NAME).
	NodeNameEnv string

	// MaxPollAttempts (max_poll_attempts) is how many times the pod list is
	// fetched while the container is not in it; zero means 60.
	MaxPollAttempts int
	// PollRetryInterval (poll_retry_interval) is the wait between attempts;
	// zero means 500ms. A pod list is reused by concurrent attestations for
	// half of it.
	PollRetryInterval time.Duration
	// ReloadInterval (reload_interval) is how often the CA, token and client
	// certificate are read again from disk (projected tokens rotate); zero
	// means one minute. A failed reload keeps the previous ones.
	ReloadInterval time.Duration
	// DisableContainerSelectors (disable_container_selectors) leaves out
	// k8s:container-name and k8s:container-image, and attests a process
	// whose pod UID is known from its cgroups by the pod alone, without
	// waiting for its container to be listed (a postStart hook calling the
	// Workload API).
	DisableContainerSelectors bool

	// MaxResponseBytes bounds the pod list (arbor's own); zero means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// ProcRoot is the proc filesystem to read cgroups from; "" means /proc.
	// Set it to the host's /proc mounted elsewhere, or to a fake tree in
	// tests.
	ProcRoot string

	Logger   *slog.Logger            // nil: discard
	Now      func() time.Time        // nil: time.Now
	Getenv   func(key string) string // nil: os.Getenv
	Hostname func() (string, error)  // nil: os.Hostname
}

// Attestor is the k8s workload attestor. It is safe for concurrent use.
type Attestor struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // guards client and loadedAt
	client   *kubeletClient
	loadedAt time.Time

	fetching  chan struct{} // one pod list request at a time
	cacheMu   sync.Mutex
	cached    []corev1.Pod
	cacheTill time.Time
}

var _ agent.WorkloadAttestor = (*Attestor)(nil)

// New returns an Attestor for cfg, having loaded its credentials.
func New(cfg Config) (*Attestor, error) {
	switch {
	case cfg.KubeletReadOnlyPort != 0 && cfg.KubeletSecurePort != 0:
		return nil, errors.New("k8s: kubelet_read_only_port and kubelet_secure_port are exclusive: set one")
	case cfg.KubeletReadOnlyPort < 0 || cfg.KubeletReadOnlyPort > 65535:
		return nil, fmt.Errorf("k8s: kubelet_read_only_port %d is not a port", cfg.KubeletReadOnlyPort)
	case cfg.KubeletSecurePort < 0 || cfg.KubeletSecurePort > 65535:
		return nil, fmt.Errorf("k8s: kubelet_secure_port %d is not a port", cfg.KubeletSecurePort)
	case !cfg.UseAnonymousAuthentication && (cfg.CertificatePath == "") != (cfg.PrivateKeyPath == ""):
		return nil, errors.New("k8s: certificate_path and private_key_path go together: set both or neither")
	case cfg.MaxPollAttempts < 0:
		return nil, fmt.Errorf("k8s: max_poll_attempts %d is negative", cfg.MaxPollAttempts)
	case cfg.PollRetryInterval < 0:
		return nil, fmt.Errorf("k8s: poll_retry_interval %v is negative", cfg.PollRetryInterval)
	case cfg.ReloadInterval < 0:
		return nil, fmt.Errorf("k8s: reload_interval %v is negative", cfg.ReloadInterval)
	case cfg.MaxResponseBytes < 0:
		return nil, fmt.Errorf("k8s: maximum response size %d is negative", cfg.MaxResponseBytes)
	}
	if cfg.KubeletReadOnlyPort == 0 && cfg.KubeletSecurePort == 0 {
		cfg.KubeletSecurePort = DefaultSecurePort
	}
	if cfg.MaxPollAttempts == 0 {
		cfg.MaxPollAttempts = DefaultMaxPollAttempts
	}
	if cfg.PollRetryInterval == 0 {
		cfg.PollRetryInterval = DefaultPollRetryInterval
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.KubeletCAPath == "" {
		cfg.KubeletCAPath = DefaultKubeletCAPath
	}
	if cfg.TokenPath == "" {
		cfg.TokenPath = DefaultTokenPath
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Hostname == nil {
		cfg.Hostname = os.Hostname
	}
	if cfg.NodeName == "" {
		env := cfg.NodeNameEnv
		if env == "" {
			env = DefaultNodeNameEnv
		}
		cfg.NodeName = cfg.Getenv(env)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client, err := newKubeletClient(&cfg)
	if err != nil {
		return nil, err
	}
	return &Attestor{
		cfg: cfg, log: log.With("workload_attestor", "k8s"),
		client: client, loadedAt: cfg.Now(),
		fetching: make(chan struct{}, 1),
	}, nil
}

// Attest returns the k8s selectors of process pid: none for a process in no
// container. It fails when the kubelet cannot be asked, when the container
// is not listed in any pod after the configured attempts, or when the
// process's cgroups name more than one pod or container.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	where, err := a.locate(pid)
	if err != nil {
		return nil, err
	}
	if where.ContainerID == "" {
		return nil, nil
	}
	for attempt := 1; ; attempt++ {
		pods, err := a.podList(ctx)
		if err != nil {
			return nil, err
		}
		values, err := a.match(pods, where)
		if err != nil {
			return nil, err
		}
		if values != nil {
			// The process must still be the one located: a process cannot
			// leave its container, so a change means its pid was reused.
			again, err := a.locate(pid)
			if err != nil {
				return nil, err
			}
			if again != where {
				return nil, fmt.Errorf("%w: pid %d was reused during attestation", ErrNoProcess, pid)
			}
			out := make([]selector.Selector, len(values))
			for i, v := range values {
				out[i] = selector.Selector{Type: SelectorType, Value: v}
			}
			return out, nil
		}
		if attempt >= a.cfg.MaxPollAttempts {
			a.log.Warn("container not found in the kubelet's pods; giving up", "pod_uid", where.UID, "container_id", where.ContainerID, "attempts", attempt)
			return nil, fmt.Errorf("%w: container %s after %d attempts", ErrContainerNotFound, where.ContainerID, attempt)
		}
		t := time.NewTimer(a.cfg.PollRetryInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("k8s: attest pid %d: container %s not found yet: %w", pid, where.ContainerID, ctx.Err())
		}
	}
}

func (a *Attestor) locate(pid int32) (cgroup.Pod, error) {
	entries, err := cgroup.Read(a.cfg.ProcRoot, pid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return cgroup.Pod{}, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
		}
		return cgroup.Pod{}, fmt.Errorf("k8s: attest pid %d: %w", pid, err)
	}
	where, err := cgroup.FindPod(entries)
	if err != nil {
		return cgroup.Pod{}, fmt.Errorf("k8s: attest pid %d: %w", pid, err)
	}
	return where, nil
}

// match returns the selector values for the pod holding where.ContainerID,
// nil if no pod does (yet).
func (a *Attestor) match(pods []corev1.Pod, where cgroup.Pod) ([]string, error) {
	var found []string
	for i := range pods {
		pod := &pods[i]
		if where.UID != "" && string(pod.UID) != where.UID {
			continue
		}
		var values []string
		if status, ok := containerStatus(pod, where.ContainerID); ok {
			values = podSelectors(pod)
			if !a.cfg.DisableContainerSelectors {
				values = append(values, containerSelectors(status)...)
			}
		} else if where.UID != "" && a.cfg.DisableContainerSelectors {
			// The pod is known and only its selectors are wanted: its
			// container need not be listed yet.
			values = podSelectors(pod)
		}
		if values == nil {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%w: container %s", ErrAmbiguous, where.ContainerID)
		}
		found = values
	}
	return found, nil
}

// containerStatus finds the status of container id in the pod's containers,
// then its init containers. The kubelet writes a status's ID as
// "<runtime>://<64 hex digits>"; anything else never matches.
func containerStatus(pod *corev1.Pod, id string) (*corev1.ContainerStatus, bool) {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range list {
			if runtime, cid, ok := strings.Cut(list[i].ContainerID, "://"); ok && runtime != "" && cid == id {
				return &list[i], true
			}
		}
	}
	return nil, false
}

// podSelectors are SPIRE's pod selectors. Images are listed both by image
// ID (with its digest) and by image name, so entries can name either.
func podSelectors(pod *corev1.Pod) []string {
	v := []string{
		"sa:" + pod.Spec.ServiceAccountName,
		"ns:" + pod.Namespace,
		"node-name:" + pod.Spec.NodeName,
		"pod-uid:" + string(pod.UID),
		"pod-name:" + pod.Name,
		"pod-image-count:" + strconv.Itoa(len(pod.Status.ContainerStatuses)),
		"pod-init-image-count:" + strconv.Itoa(len(pod.Status.InitContainerStatuses)),
	}
	for _, img := range images(pod.Status.ContainerStatuses...) {
		v = append(v, "pod-image:"+img)
	}
	for _, img := range images(pod.Status.InitContainerStatuses...) {
		v = append(v, "pod-init-image:"+img)
	}
	keys := make([]string, 0, len(pod.Labels))
	for k := range pod.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v = append(v, "pod-label:"+k+":"+pod.Labels[k])
	}
	for _, o := range pod.OwnerReferences {
		v = append(v, "pod-owner:"+o.Kind+":"+o.Name, "pod-owner-uid:"+o.Kind+":"+string(o.UID))
	}
	return v
}

// containerSelectors are SPIRE's selectors of the caller's own container.
func containerSelectors(status *corev1.ContainerStatus) []string {
	v := []string{"container-name:" + status.Name}
	for _, img := range images(*status) {
		v = append(v, "container-image:"+img)
	}
	return v
}

// images returns the distinct image IDs and image names of the statuses,
// sorted. Like SPIRE, an image ID not known yet counts as "".
func images(statuses ...corev1.ContainerStatus) []string {
	var out []string
	for _, s := range statuses {
		out = append(out, s.ImageID, s.Image)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// podList returns the kubelet's pods, from a list fetched less than half a
// poll interval ago when there is one, so concurrent attestations share a
// request.
func (a *Attestor) podList(ctx context.Context) ([]corev1.Pod, error) {
	if pods, ok := a.cachedPods(); ok {
		return pods, nil
	}
	select {
	case a.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("k8s: waiting for the pod list: %w", ctx.Err())
	}
	defer func() { <-a.fetching }()
	if pods, ok := a.cachedPods(); ok {
		return pods, nil
	}
	pods, err := a.kubelet().pods(ctx, a.cfg.MaxResponseBytes)
	if err != nil {
		return nil, err
	}
	a.cacheMu.Lock()
	a.cached, a.cacheTill = pods, a.cfg.Now().Add(a.cfg.PollRetryInterval/2)
	a.cacheMu.Unlock()
	return pods, nil
}

func (a *Attestor) cachedPods() ([]corev1.Pod, bool) {
	a.cacheMu.Lock()
	defer a.cacheMu.Unlock()
	if a.cached == nil || !a.cfg.Now().Before(a.cacheTill) {
		return nil, false
	}
	return a.cached, true
}

// kubelet returns the client, first reloading its credentials from disk if
// they are older than ReloadInterval. A failed reload keeps the old ones.
func (a *Attestor) kubelet() *kubeletClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.client.secure || a.cfg.Now().Sub(a.loadedAt) < a.cfg.ReloadInterval {
		return a.client
	}
	c, err := newKubeletClient(&a.cfg)
	if err != nil {
		a.log.Warn("reloading kubelet credentials failed; keeping the previous ones", "err", err)
		// Try again at the next interval, not on every call.
		a.loadedAt = a.cfg.Now()
		return a.client
	}
	a.client.close()
	a.client, a.loadedAt = c, a.cfg.Now()
	return c
}
