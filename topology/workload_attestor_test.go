package topology

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

// wlSrc is a root and a child whose agent block holds body.
func wlSrc(body string) string {
	return treeSrc(`  node_attestor "join_token" {}`, "    node_attestor \"join_token\" {}\n"+body)
}

// TestParseWorkloadAttestors: every attribute of the three kinds reaches the
// agent's WorkloadAttestors, in file order; render and render --format spire
// write them back.
func TestParseWorkloadAttestors(t *testing.T) {
	src := wlSrc(`    workload_attestor "k8s" {
      kubelet_secure_port          = 10251
      kubelet_ca_path              = "/etc/kubelet/ca.pem"
      skip_kubelet_verification    = false
      token_path                   = "/var/run/secrets/tokens/agent"
      node_name_env                = "NODE_NAME"
      max_poll_attempts            = 10
      poll_retry_interval          = "1s"
      disable_container_selectors  = true
      use_new_container_locator    = true
    }
    workload_attestor "docker" {
      docker_socket_path = "unix:///run/docker.sock"
      docker_version     = "1.41"
      env_keys           = ["ENVIRONMENT", "REGION"]
    }
    workload_attestor "unix" {
      discover_workload_path = true
    }`)
	f, diags := Parse([]byte(src), testPath)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	s, _ := f.Server("edge")
	want := []WorkloadAttestor{
		{Kind: "k8s", K8s: K8sWorkloadAttestor{KubeletSecurePort: 10251, KubeletCAPath: "/etc/kubelet/ca.pem", TokenPath: "/var/run/secrets/tokens/agent",
			NodeNameEnv: "NODE_NAME", MaxPollAttempts: 10, PollRetryInterval: time.Second, DisableContainerSelectors: true}},
		{Kind: "docker", Docker: DockerWorkloadAttestor{SocketPath: "/run/docker.sock", APIVersion: "1.41", EnvKeys: []string{"ENVIRONMENT", "REGION"}}},
		{Kind: "unix", Unix: UnixWorkloadAttestor{DiscoverWorkloadPath: true}},
	}
	if diff := cmp.Diff(want, s.Agent.WorkloadAttestors, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Range" }, cmp.Ignore())); diff != "" {
		t.Errorf("WorkloadAttestors mismatch (-want +got):\n%s", diff)
	}
	sc, err := RenderSPIRE(f, "edge")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := sc.WriteAgentConf(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`WorkloadAttestor "k8s"`, `kubelet_secure_port         = 10251`, `poll_retry_interval         = "1s"`,
		`WorkloadAttestor "docker"`, `docker_socket_path        = "unix:///run/docker.sock"`, `discover_workload_path = true`,
		"# docker: spire-agent turns every environment variable"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("agent.conf lacks %q:\n%s", w, b.String())
		}
	}
	rc, err := Render(f, "edge")
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := rc.WriteHCL(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`workload_attestor "k8s"`, `env_keys           = ["ENVIRONMENT", "REGION"]`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("render lacks %q:\n%s", w, b.String())
		}
	}
}

func TestWorkloadAttestorErrors(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       []diagAt
	}{
		{"unknown kind", `    workload_attestor "kubernetes" {}`, []diagAt{{"12:23", "Unknown workload attestor kind"}}},
		{"duplicate", "    workload_attestor \"k8s\" {}\n    workload_attestor \"k8s\" {}", []diagAt{{"13:23", "Duplicate workload attestor"}}},
		{"two ports", "    workload_attestor \"k8s\" {\n      kubelet_secure_port = 10250\n      kubelet_read_only_port = 10255\n    }", []diagAt{{"14:7", "Two kubelet ports"}}},
		{"bad port", "    workload_attestor \"k8s\" {\n      kubelet_secure_port = 70000\n    }", []diagAt{{"13:29", "Invalid port"}}},
		{"certificate without key", "    workload_attestor \"k8s\" {\n      certificate_path = \"c.pem\"\n    }", []diagAt{{"13:7", "Kubelet client certificate without its key"}}},
		{"old locator", "    workload_attestor \"k8s\" {\n      use_new_container_locator = false\n    }", []diagAt{{"13:35", "Old container locator"}}},
		{"tcp docker", "    workload_attestor \"docker\" {\n      docker_socket_path = \"tcp://10.0.0.1:2375\"\n    }", []diagAt{{"13:28", "Docker socket not local"}}},
		{"bad env key", "    workload_attestor \"docker\" {\n      env_keys = [\"A=B\"]\n    }", []diagAt{{"13:19", "Invalid environment variable name"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := wlSrc(tt.body)
			_, diags := Parse([]byte(src), testPath)
			var got []diagAt
			for _, d := range diags {
				if d.Severity == hcl.DiagError && d.Subject != nil {
					got = append(got, diagAt{fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column), d.Summary})
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diagnostics mismatch (-want +got):\n%s\nsource:\n%s\nall:\n%s", diff, src, FormatDiagnostics(diags, nil))
			}
		})
	}
}
