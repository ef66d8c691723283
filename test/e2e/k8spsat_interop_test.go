package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// TestK8sPSATWithSpire: one pod's projected service account token, issued
// by a fake kube-apiserver, attests a real spire-agent (its own k8s_psat
// plugin) to an arbor server whose k8s_psat reviews the token with that API
// server, and an arbor agent (arbor's k8s_psat) to a real spire-server whose
// k8s_psat reaches the same API server through kube_config_file. Both
// servers give the agent the same SPIFFE ID and the same selectors, and each
// agent serves a workload its SVID. Against every SPIRE release.
func TestK8sPSATWithSpire(t *testing.T) { forEachSpire(t, testK8sPSATWithSpire) }

func testK8sPSATWithSpire(t *testing.T, p *spirePeer) {
	fake, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	dir := shortTempDir(t, "psat")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := fake.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	fake.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: k8stypes.UID("7f3c1d2e-node-1"), Labels: map[string]string{"zone": "a", "secret": "x"}}})
	fake.SetPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "spire-agent-abc", UID: k8stypes.UID("0a1b2c3d-pod"), Labels: map[string]string{"app": "spire-agent", "team": "x"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "spire-agent"},
		Status:     corev1.PodStatus{HostIP: "10.0.0.7"},
	})
	token, err := fake.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "spire-agent-abc"})
	if err != nil {
		t.Fatal(err)
	}
	tokenPath := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenPath, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	wantID := spiffeid.RequireFromPath(td, "/spire/agent/k8s_psat/test/7f3c1d2e-node-1")
	uidSel := fmt.Sprintf("unix:uid:%d", os.Getuid())

	// arbor server with k8s_psat; a real spire-agent attests to it.
	att, err := k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"test": {
		ServiceAccountAllowList: []string{"spire:spire-agent"}, KubeConfigFile: kubeconfig,
		AllowedNodeLabelKeys: []string{"zone"}, AllowedPodLabelKeys: []string{"app"},
	}}}, td)
	if err != nil {
		t.Fatal(err)
	}
	ts := testkit.StartServer(t, server.Config{Name: "psat", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(dir, "arbor"), AdminSocket: filepath.Join(dir, "admin.sock"),
		NodeAttestors: []nodeattest.Attestor{att}})
	arbor := &arborServer{adminSock: filepath.Join(dir, "admin.sock"), port: ts.AgentAddr().(*net.TCPAddr).Port, spire: p}
	_, arborPEM := arbor.bundlePEM(t)
	spireAgent := startSpireAgentWith(t, p, td.Name(), arbor.port, arborPEM, nil, "", fmt.Sprintf(`NodeAttestor "k8s_psat" {
    plugin_data {
      cluster    = "test"
      token_path = %q
    }
  }`, tokenPath))
	var atArbor types.Agent
	poll(t, waitTimeout, "spire-agent attested to arbor with k8s_psat", func() error {
		r := arbor.cliRun(t, "agent", "show", "-spiffeID", wantID.String(), "-output", "json")
		if r.err != nil {
			return fmt.Errorf("%v: %s%s", r.err, r.stdout, r.stderr)
		}
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal([]byte(r.stdout), &atArbor)
	})
	arbor.createEntry(t, wantID, mustID(t, "/wl/psat-spire-agent"), uidSel)
	spireAgent.waitX509SVID(t, mustID(t, "/wl/psat-spire-agent"))

	// A real spire-server with k8s_psat on the same API server; an arbor
	// agent attests to it with the same token.
	s := startSpireServerWith(t, p, td.Name(), filepath.Join(dir, "spire"), nil, "", fmt.Sprintf(`NodeAttestor "k8s_psat" {
    plugin_data {
      clusters = {
        "test" = {
          service_account_allow_list = ["spire:spire-agent"]
          kube_config_file           = %q
          allowed_node_label_keys    = ["zone"]
          allowed_pod_label_keys     = ["app"]
        }
      }
    }
  }`, kubeconfig))
	roots := pemCerts(t, []byte(s.mustCLI(t, "bundle", "show")))
	unixAtt, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	adir := shortTempDir(t, "pa")
	ag, err := agent.New(agent.Config{TrustDomain: td, ServerAddress: fmt.Sprintf("127.0.0.1:%d", s.port), TrustBundle: roots,
		DataDir: filepath.Join(adir, "data"), SocketPath: filepath.Join(adir, "api.sock"),
		NodeAttestor:      k8spsat.NewAgentAttestor(k8spsat.AgentConfig{Cluster: "test", TokenPath: tokenPath}),
		WorkloadAttestors: []agent.WorkloadAttestor{unixAtt}, SyncInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the arbor agent did not stop within 30s")
		}
	})
	select {
	case <-ag.Ready():
	case err := <-done:
		t.Fatalf("the arbor agent stopped before attesting to spire-server: %v\n%s", err, tail(s.proc.log, 30))
	case <-time.After(waitTimeout):
		t.Fatalf("the arbor agent did not attest to spire-server within %v\n%s", waitTimeout, tail(s.proc.log, 30))
	}
	if got := ag.SPIFFEID(); got != wantID {
		t.Errorf("spire-server gave the arbor agent %v, arbor gave spire-agent %v; want both %v", got, atArbor.GetId(), wantID)
	}
	var atSpire types.Agent
	out := s.mustCLI(t, "agent", "show", "-spiffeID", wantID.String(), "-output", "json")
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), &atSpire); err != nil {
		t.Fatalf("spire-server agent show: %v\n%s", err, out)
	}
	sels := func(a *types.Agent) []string {
		var out []string
		for _, s := range a.GetSelectors() {
			out = append(out, s.GetType()+":"+s.GetValue())
		}
		slices.Sort(out)
		return out
	}
	if a, b := sels(&atArbor), sels(&atSpire); !slices.Equal(a, b) || len(a) == 0 {
		t.Errorf("selectors differ for the same pod:\n  arbor:        %s\n  spire-server: %s", strings.Join(a, " "), strings.Join(b, " "))
	}
	for _, want := range []string{"k8s_psat:cluster:test", "k8s_psat:agent_ns:spire", "k8s_psat:agent_node_label:zone:a", "k8s_psat:agent_pod_label:app:spire-agent"} {
		if !slices.Contains(sels(&atArbor), want) {
			t.Errorf("arbor's selectors %v lack %s", sels(&atArbor), want)
		}
	}
	for _, banned := range []string{"k8s_psat:agent_node_label:secret:x", "k8s_psat:agent_pod_label:team:x"} {
		if slices.Contains(sels(&atArbor), banned) {
			t.Errorf("arbor's selectors carry %s, a label key not allowed", banned)
		}
	}
	s.mustCLI(t, "entry", "create", "-parentID", wantID.String(), "-spiffeID", mustID(t, "/wl/psat-arbor-agent").String(), "-selector", uidSel)
	poll(t, waitTimeout, "the arbor agent serving its workload an SVID from spire-server", func() error {
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer fcancel()
		svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+filepath.Join(adir, "api.sock")))
		if err != nil {
			return err
		}
		if svid.ID != mustID(t, "/wl/psat-arbor-agent") {
			return fmt.Errorf("got %v", svid.ID)
		}
		return nil
	})
}

// pemCerts parses every CERTIFICATE block of data.
func pemCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM data")
	}
	return out
}
