package main

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/docker"
	"github.com/arborid/arbor/agent/workloadattestor/k8s"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
)

// workloadAttestorKinds are what --workload-attestor accepts besides unix,
// which always runs.
var workloadAttestorKinds = []string{"k8s", "docker"}

// workloadAttestorFlags are the flags of `arbor agent run` that choose how
// the agent attests the processes calling its Workload API: unix always,
// and k8s and docker when named; each kind's flags, named after SPIRE's
// plugin_data, imply the kind.
type workloadAttestorFlags struct {
	kinds     []string
	unixPaths bool

	kubeletSecurePort, kubeletReadOnlyPort int
	kubeletCA, kubeletToken, nodeName      string
	skipKubeletVerification                bool

	dockerSocket string
	dockerEnv    []string
}

var k8sWorkloadFlags = []string{"kubelet-secure-port", "kubelet-read-only-port", "kubelet-ca-path", "kubelet-token-path", "skip-kubelet-verification", "node-name"}
var dockerWorkloadFlags = []string{"docker-socket-path", "docker-env-key"}

func (f *workloadAttestorFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.kinds, "workload-attestor", nil, "attest workloads also with these (k8s, docker; repeat or comma-separate); unix always runs")
	fs.BoolVar(&f.unixPaths, "unix-workload-path", false, "unix: add unix:path and unix:sha256 selectors (needs access to /proc/<pid>/exe)")
	fs.IntVar(&f.kubeletSecurePort, "kubelet-secure-port", 0, "k8s: the kubelet's HTTPS port (default 10250)")
	fs.IntVar(&f.kubeletReadOnlyPort, "kubelet-read-only-port", 0, "k8s: the kubelet's read-only HTTP port, instead of the secure one")
	fs.StringVar(&f.kubeletCA, "kubelet-ca-path", "", "k8s: CA certificates that verify the kubelet (default the pod's service account CA)")
	fs.StringVar(&f.kubeletToken, "kubelet-token-path", "", "k8s: the bearer token for the kubelet (default the pod's service account token)")
	fs.BoolVar(&f.skipKubeletVerification, "skip-kubelet-verification", false, "k8s: do not verify the kubelet's certificate")
	fs.StringVar(&f.nodeName, "node-name", "", "k8s: the node the agent runs on (default $MY_NODE_NAME, else the host name)")
	fs.StringVar(&f.dockerSocket, "docker-socket-path", "", "docker: the Docker Engine API socket (default /var/run/docker.sock)")
	fs.StringSliceVar(&f.dockerEnv, "docker-env-key", nil, "docker: environment variables that become docker:env selectors (none by default: values may be secrets)")
}

// build returns the workload attestors the flags ask for, unix first, and
// a func that releases them.
func (f *workloadAttestorFlags) build(fs *pflag.FlagSet, log *slog.Logger) ([]agent.WorkloadAttestor, io.Closer, error) {
	kinds := map[string]bool{}
	for _, k := range f.kinds {
		k = strings.TrimSpace(k)
		if k == "unix" {
			continue
		}
		if !slices.Contains(workloadAttestorKinds, k) {
			return nil, nil, fmt.Errorf("--workload-attestor %q: want k8s or docker (unix always runs)", k)
		}
		kinds[k] = true
	}
	for kind, names := range map[string][]string{"k8s": k8sWorkloadFlags, "docker": dockerWorkloadFlags} {
		for _, name := range names {
			if fs.Changed(name) {
				kinds[kind] = true
			}
		}
	}
	u, err := unix.New(unix.Config{DiscoverWorkloadPath: f.unixPaths})
	if err != nil {
		return nil, nil, err
	}
	out := []agent.WorkloadAttestor{u}
	var closers closeAll
	if kinds["k8s"] {
		a, err := k8s.New(k8s.Config{
			KubeletSecurePort: f.kubeletSecurePort, KubeletReadOnlyPort: f.kubeletReadOnlyPort,
			KubeletCAPath: f.kubeletCA, TokenPath: f.kubeletToken, SkipKubeletVerification: f.skipKubeletVerification,
			NodeName: f.nodeName, Logger: log,
		})
		if err != nil {
			return nil, nil, err
		}
		out = append(out, a)
	}
	if kinds["docker"] {
		a, err := docker.New(docker.Config{SocketPath: f.dockerSocket, EnvKeys: f.dockerEnv, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		out = append(out, a)
		closers = append(closers, a)
	}
	return out, closers, nil
}

type closeAll []io.Closer

func (c closeAll) Close() error {
	var first error
	for _, x := range c {
		if err := x.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
