// Package docker is the agent's "docker" workload attestor: it finds the
// container of a Workload API caller from its cgroups, inspects it through
// the Docker Engine API on the daemon's Unix socket (the moby client), and
// returns SPIRE's docker selectors: docker:label:<key>:<value> for each label,
// docker:image_id:<image> (the image as the container was created from it,
// such as envoyproxy/envoy:v1.29.1: SPIRE's name for it, not the image's
// sha256 ID) and docker:env:<KEY>=<value> for the environment variables the
// configuration allows.
//
// Environment variables are where the difference with SPIRE lies: SPIRE's
// plugin turns every variable of the container into a selector, so secrets
// passed in the environment become selector values that are held, compared
// and possibly logged by the agent. Here only the keys listed in
// Config.EnvKeys are, so a SPIRE entry using docker:env:ENVIRONMENT=prod
// matches once ENVIRONMENT is listed, and fails closed (no SVID) until then.
//
// A process in no container gets no selectors and no error, as in SPIRE. A
// process in a container the daemon does not know (a Kubernetes pod's under
// containerd, say) fails its attestation with ErrContainerNotFound, as
// SPIRE's does: configure this attestor only where workloads run under
// Docker.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/cgroup"
	"github.com/arborid/arbor/internal/selector"
)

// SelectorType is the type of every selector this attestor produces.
const SelectorType = "docker"

const (
	// DefaultSocketPath is the Docker daemon's socket (SPIRE's default
	// docker_socket_path, unix:///var/run/docker.sock).
	DefaultSocketPath = "/var/run/docker.sock"
	// DefaultMaxResponseBytes bounds one answer of the daemon: a container's
	// inspect document is a few KiB, labels and environment included.
	DefaultMaxResponseBytes = 4 << 20
	// DefaultMaxAttempts is how many times a failing inspect is tried
	// (SPIRE's plugin retries too).
	DefaultMaxAttempts = 3
)

// requestTimeout bounds one request to the daemon.
const requestTimeout = 10 * time.Second

var (
	// ErrDocker is wrapped by every failure to inspect the caller's
	// container: daemon unreachable, an error answer, a redirect, an answer
	// too large or not a container's.
	ErrDocker = errors.New("docker: inspecting the container failed")
	// ErrContainerNotFound means the daemon does not know the caller's
	// container.
	ErrContainerNotFound = errors.New("docker: container not found")
	// ErrResponseTooLarge means an answer exceeded MaxResponseBytes.
	ErrResponseTooLarge = errors.New("docker: daemon response too large")
	// ErrRedirect means the daemon answered with a redirect, which is never
	// followed.
	ErrRedirect = errors.New("docker: daemon redirected the request")
	// ErrNoProcess means the caller's process does not exist (any more), or
	// its pid was reused while it was attested.
	ErrNoProcess = errors.New("docker: process not found")
)

// Config configures an Attestor. Fields that stand for a plugin_data
// attribute of SPIRE's docker workload attestor name it in parentheses. The
// zero value inspects containers through /var/run/docker.sock, negotiating
// the API version, with no docker:env selectors. A Config must not be
// modified after New.
//
// SPIRE's use_new_container_locator and verbose_container_locator_logs have
// no field: arbor only has the new locator (package cgroup). Its
// container_id_cgroup_matchers, its Podman sockets and its sigstore options
// are not supported.
type Config struct {
	// SocketPath (docker_socket_path) is the daemon's Unix socket, as a path
	// or as SPIRE's unix:// URL; "" means DefaultSocketPath. Other schemes
	// (tcp://) are refused: the daemon is the node's own.
	SocketPath string
	// APIVersion (docker_version) pins the Engine API version ("1.47");
	// "" negotiates it with the daemon on the first request.
	APIVersion string
	// EnvKeys lists the environment variables that become docker:env:K=V
	// selectors (arbor's own; SPIRE makes one of every variable). A key
	// absent from the container yields none; nil means no env selectors.
	EnvKeys []string

	// MaxAttempts is how many times an inspect that fails (other than with
	// a not-found, a refusal or a cancellation) is tried, with jittered
	// backoff from 100ms; zero means DefaultMaxAttempts.
	MaxAttempts int
	// MaxResponseBytes bounds each answer of the daemon; zero means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// ProcRoot is the proc filesystem to read cgroups from; "" means /proc.
	ProcRoot string

	Logger *slog.Logger // nil: discard
}

// Attestor is the docker workload attestor. It is safe for concurrent use.
type Attestor struct {
	cfg       Config
	log       *slog.Logger
	docker    *client.Client
	transport *http.Transport
	env       map[string]bool
}

var _ agent.WorkloadAttestor = (*Attestor)(nil)

// New returns an Attestor for cfg. It does not contact the daemon: one that
// is down fails attestations, not the agent's start.
func New(cfg Config) (*Attestor, error) {
	sock := cfg.SocketPath
	if sock == "" {
		sock = DefaultSocketPath
	}
	if scheme, rest, ok := strings.Cut(sock, "://"); ok {
		if scheme != "unix" {
			return nil, fmt.Errorf("docker: docker_socket_path %q: only unix:// sockets are supported", cfg.SocketPath)
		}
		sock = rest
	}
	if !strings.HasPrefix(sock, "/") {
		return nil, fmt.Errorf("docker: docker_socket_path %q is not an absolute path", cfg.SocketPath)
	}
	cfg.SocketPath = sock
	switch {
	case cfg.MaxAttempts < 0:
		return nil, fmt.Errorf("docker: max attempts %d is negative", cfg.MaxAttempts)
	case cfg.MaxAttempts == 0:
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	switch {
	case cfg.MaxResponseBytes < 0:
		return nil, fmt.Errorf("docker: maximum response size %d is negative", cfg.MaxResponseBytes)
	case cfg.MaxResponseBytes == 0:
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	env := make(map[string]bool, len(cfg.EnvKeys))
	for _, k := range cfg.EnvKeys {
		if k == "" || strings.Contains(k, "=") {
			return nil, fmt.Errorf("docker: environment variable name %q is empty or holds '='", k)
		}
		env[k] = true
	}

	// The daemon's own socket, never a proxy or DOCKER_HOST: the client is
	// built from this transport alone.
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		ResponseHeaderTimeout:  requestTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           2,
		IdleConnTimeout:        30 * time.Second,
	}
	hc := &http.Client{
		Transport: &boundedTransport{base: transport, max: cfg.MaxResponseBytes},
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			return fmt.Errorf("%w to %s", ErrRedirect, req.URL.Redacted())
		},
	}
	opts := []client.Opt{client.WithHTTPClient(hc)}
	if cfg.APIVersion != "" {
		opts = append(opts, client.WithAPIVersion(cfg.APIVersion))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Attestor{cfg: cfg, log: log.With("workload_attestor", "docker"), docker: c, transport: transport, env: env}, nil
}

// Close releases the client's idle connections.
func (a *Attestor) Close() error {
	a.transport.CloseIdleConnections()
	return a.docker.Close()
}

// Attest returns the docker selectors of process pid: none for a process in
// no container.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	id, err := a.locate(pid)
	if err != nil || id == "" {
		return nil, err
	}
	c, err := a.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	// The process must still be in that container: a process cannot leave
	// it, so a change means its pid was reused by another.
	again, err := a.locate(pid)
	if err != nil {
		return nil, err
	}
	if again != id {
		return nil, fmt.Errorf("%w: pid %d was reused during attestation", ErrNoProcess, pid)
	}
	return a.selectors(c), nil
}

func (a *Attestor) locate(pid int32) (string, error) {
	entries, err := cgroup.Read(a.cfg.ProcRoot, pid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
		}
		return "", fmt.Errorf("docker: attest pid %d: %w", pid, err)
	}
	id, err := cgroup.FindContainerID(entries)
	if err != nil {
		return "", fmt.Errorf("docker: attest pid %d: %w", pid, err)
	}
	return id, nil
}

// inspect asks the daemon for container id, trying again after transient
// failures.
func (a *Attestor) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := a.inspectOnce(ctx, id)
		if err == nil || attempt >= a.cfg.MaxAttempts || !retryable(err) || ctx.Err() != nil {
			return c, err
		}
		// Full jitter, capped: a daemon restarting is not hammered.
		t := time.NewTimer(backoff/2 + rand.N(backoff/2))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return container.InspectResponse{}, fmt.Errorf("%w: container %s: %w", ErrDocker, id, ctx.Err())
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func retryable(err error) bool {
	return !errors.Is(err, ErrContainerNotFound) && !errors.Is(err, ErrResponseTooLarge) &&
		!errors.Is(err, ErrRedirect) && !errors.Is(err, errNotContainer)
}

// errNotContainer means an answer is not the inspect document of the
// container asked for.
var errNotContainer = errors.New("not the container's inspect document")

func (a *Attestor) inspectOnce(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := a.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return container.InspectResponse{}, fmt.Errorf("%w: %s: %w", ErrDocker, id, ErrContainerNotFound)
	case err != nil:
		return container.InspectResponse{}, fmt.Errorf("%w: container %s: %w", ErrDocker, id, err)
	}
	if err := checkInspect(res.Container, id); err != nil {
		return container.InspectResponse{}, fmt.Errorf("%w: container %s: %w", ErrDocker, id, err)
	}
	return res.Container, nil
}

// checkInspect refuses an answer that is not about container id: the
// selectors must be the caller's container's, whatever the daemon sent.
func checkInspect(c container.InspectResponse, id string) error {
	switch {
	case c.ID != id:
		return fmt.Errorf("%w: the answer is about container %q", errNotContainer, c.ID)
	case c.Config == nil:
		return fmt.Errorf("%w: no Config", errNotContainer)
	}
	return nil
}

// selectors are SPIRE's: labels sorted by key, the allowed environment
// variables in the container's order, then the image.
func (a *Attestor) selectors(c container.InspectResponse) []selector.Selector {
	var out []selector.Selector
	add := func(v string) { out = append(out, selector.Selector{Type: SelectorType, Value: v}) }
	keys := make([]string, 0, len(c.Config.Labels))
	for k := range c.Config.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add("label:" + k + ":" + c.Config.Labels[k])
	}
	for _, e := range c.Config.Env {
		if k, _, ok := strings.Cut(e, "="); ok && a.env[k] {
			add("env:" + e)
		}
	}
	if c.Config.Image != "" {
		add("image_id:" + c.Config.Image)
	}
	return out
}

// boundedTransport fails a response whose body passes max bytes.
type boundedTransport struct {
	base *http.Transport
	max  int64
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrResponseTooLarge, resp.ContentLength, t.max)
	}
	resp.Body = &boundedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// boundedBody reads at most left bytes, then fails.
type boundedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("%w: more than the limit", ErrResponseTooLarge)
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, fmt.Errorf("%w: more than the limit", ErrResponseTooLarge)
	}
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }
