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
	"github.com/arborid/arbor/internal/tier"
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

// build returns the workload attestors of base (the topology's agent
// block; zero without one) and those the flags ask for, unix first, and a
// Closer that releases them. A flag given replaces that one setting of
// base.
func (f *workloadAttestorFlags) build(fs *pflag.FlagSet, base tier.WorkloadAttestors, log *slog.Logger) ([]agent.WorkloadAttestor, io.Closer, error) {
	kinds := map[string]bool{"k8s": base.K8s != nil, "docker": base.Docker != nil}
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
	uc := base.Unix
	if fs.Changed("unix-workload-path") {
		uc.DiscoverWorkloadPath = f.unixPaths
	}
	u, err := unix.New(uc)
	if err != nil {
		return nil, nil, err
	}
	out := []agent.WorkloadAttestor{u}
	var closers closeAll
	if kinds["k8s"] {
		var kc k8s.Config
		if base.K8s != nil {
			kc = *base.K8s
		}
		setInt(fs, "kubelet-secure-port", &kc.KubeletSecurePort, f.kubeletSecurePort)
		setInt(fs, "kubelet-read-only-port", &kc.KubeletReadOnlyPort, f.kubeletReadOnlyPort)
		// One port flag replaces the file's other port.
		if fs.Changed("kubelet-secure-port") && !fs.Changed("kubelet-read-only-port") {
			kc.KubeletReadOnlyPort = 0
		}
		if fs.Changed("kubelet-read-only-port") && !fs.Changed("kubelet-secure-port") {
			kc.KubeletSecurePort = 0
		}
		setStr(fs, "kubelet-ca-path", &kc.KubeletCAPath, f.kubeletCA)
		setStr(fs, "kubelet-token-path", &kc.TokenPath, f.kubeletToken)
		setStr(fs, "node-name", &kc.NodeName, f.nodeName)
		if fs.Changed("skip-kubelet-verification") {
			kc.SkipKubeletVerification = f.skipKubeletVerification
		}
		kc.Logger = log
		a, err := k8s.New(kc)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, a)
	}
	if kinds["docker"] {
		var dc docker.Config
		if base.Docker != nil {
			dc = *base.Docker
		}
		setStr(fs, "docker-socket-path", &dc.SocketPath, f.dockerSocket)
		if fs.Changed("docker-env-key") {
			dc.EnvKeys = f.dockerEnv
		}
		dc.Logger = log
		a, err := docker.New(dc)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, a)
		closers = append(closers, a)
	}
	return out, closers, nil
}

func setInt(fs *pflag.FlagSet, name string, dst *int, v int) {
	if fs.Changed(name) {
		*dst = v
	}
}

func setStr(fs *pflag.FlagSet, name string, dst *string, v string) {
	if fs.Changed(name) {
		*dst = v
	}
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
