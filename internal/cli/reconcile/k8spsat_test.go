package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/topology"
)

// psatCluster is a fake cluster with one agent pod and its token file.
type psatCluster struct {
	name, kubeconfig, token string
}

func newPSATCluster(t *testing.T, dir, name string) psatCluster {
	t.Helper()
	fake, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	c := psatCluster{name: name, kubeconfig: filepath.Join(dir, name+".kubeconfig"), token: filepath.Join(dir, name+".token")}
	if err := fake.WriteKubeconfig(c.kubeconfig); err != nil {
		t.Fatal(err)
	}
	fake.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: k8stypes.UID(name + "-node-1")}})
	fake.SetPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "agent-0", UID: k8stypes.UID(name + "-pod"), Labels: map[string]string{"app": "agent"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "spire-agent"},
	})
	tok, err := fake.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "agent-0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.token, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// block is the cluster block of c in a topology file, with extra lines.
func (c psatCluster) block(extra string) string {
	return fmt.Sprintf("    cluster %q {\n      service_account_allow_list = [\"spire:spire-agent\"]\n      kube_config_file = %q\n%s    }\n",
		c.name, c.kubeconfig, extra)
}

// attest runs a fresh agent of cluster c against the server until it has
// attested (nil) or stopped (its error).
func (c psatCluster) attest(t *testing.T, srv *testkit.Server) error {
	t.Helper()
	dir := testkit.ShortDir(t)
	ag, err := agent.New(agent.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), ServerAddress: srv.AgentAddr().String(),
		TrustBundle: srv.Bundles().X509Bundle().X509Authorities(), DataDir: filepath.Join(dir, "data"), SocketPath: filepath.Join(dir, "a.sock"),
		NodeAttestor: k8spsat.NewAgentAttestor(k8spsat.AgentConfig{Cluster: c.name, TokenPath: c.token})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	select {
	case <-ag.Ready():
		cancel()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

// TestApplyK8sPSATClusters: apply gives a running server's k8s_psat
// attestor the clusters of the file, without a restart: a cluster added to
// the file accepts its agents after apply (not after a dry run), a cluster
// removed from it refuses them, a changed one is updated; a second apply
// changes nothing; a set the server cannot take (a kubeconfig it cannot
// read) changes nothing; a server started without k8s_psat says to restart.
func TestApplyK8sPSATClusters(t *testing.T) {
	dir := testkit.ShortDir(t)
	east, west := newPSATCluster(t, dir, "east"), newPSATCluster(t, dir, "west")
	att, err := k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"east": {
		ServiceAccountAllowList: []string{"spire:spire-agent"}, Audience: []string{"spire-server"}, KubeConfigFile: east.kubeconfig,
	}}}, spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "root.sock")
	root := testkit.StartServer(t, server.Config{Name: "root", TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr: "127.0.0.1:0", AdminSocket: sock, StateDir: filepath.Join(dir, "root"), NodeAttestors: []nodeattest.Attestor{att}})
	adm := dialAdmin(t, sock)
	file := func(clusters string) *topology.File {
		t.Helper()
		src := fmt.Sprintf("trust_domain = \"example.org\"\nserver \"root\" {\n  listen = \"127.0.0.1:0\"\n  health_listen = \"off\"\n"+
			"  state_dir = %q\n  admin_socket = %q\n  node_attestor \"k8s_psat\" {\n%s  }\n}\n", filepath.Join(dir, "root"), sock, clusters)
		path := filepath.Join(dir, "t.hcl")
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		f, diags := topology.ParseFile(path)
		if diags.HasErrors() {
			t.Fatalf("%s\n%s", src, topology.FormatDiagnostics(diags, nil))
		}
		return f
	}
	names := func() string {
		t.Helper()
		m, err := adm.K8sPSATClusters(testkit.Context(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for n, c := range m {
			out = append(out, n+":"+strings.Join(c.AllowedPodLabelKeys, ","))
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	if err := west.attest(t, root); err == nil {
		t.Fatal("an agent of west attested before west was configured")
	}

	both := file(east.block("      allowed_pod_label_keys = [\"app\"]\n") + west.block(""))
	out, err := runApply(t, both, true)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	wantOutput(t, out, "~ root: update k8s_psat cluster east: allowed_pod_label_keys", "+ root: create k8s_psat cluster west", "would apply 2 change(s)")
	if got := names(); got != "east:" {
		t.Errorf("after a dry run the server holds clusters %q, want east alone, unchanged", got)
	}

	out, err = runApply(t, both, false)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	wantOutput(t, out, "applied 2 change(s)")
	if got := names(); got != "east:app west:" {
		t.Errorf("after apply the server holds clusters %q, want east (app label allowed) and west", got)
	}
	if err := west.attest(t, root); err != nil {
		t.Errorf("an agent of the added cluster west: %v", err)
	}
	out, _ = runApply(t, both, false)
	wantOutput(t, out, "= root: unchanged k8s_psat cluster east", "= root: unchanged k8s_psat cluster west", "applied 0 change(s)")

	// A cluster the server cannot configure: nothing changes.
	bad := file(west.block("") + strings.Replace(east.block(""), east.kubeconfig, filepath.Join(dir, "missing.kubeconfig"), 1))
	out, err = runApply(t, bad, false)
	if err == nil || !strings.Contains(out, "missing.kubeconfig") {
		t.Errorf("apply with an unreadable kubeconfig = %v, want an error naming it:\n%s", err, out)
	}
	if got := names(); got != "east:app west:" {
		t.Errorf("after a refused apply the server holds clusters %q, want them unchanged", got)
	}

	// East removed from the file: its agents are refused from then on.
	out, err = runApply(t, file(west.block("")), false)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	wantOutput(t, out, "- root: delete k8s_psat cluster east", "applied 1 change(s)")
	if err := east.attest(t, root); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("an agent of the removed cluster east: %v, want refused (cluster not configured)", err)
	}

	// A server started without k8s_psat cannot get one at runtime.
	plainSock := filepath.Join(dir, "plain.sock")
	testkit.StartServer(t, server.Config{Name: "plain", TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr: "127.0.0.1:0", AdminSocket: plainSock, StateDir: filepath.Join(dir, "plain")})
	plain := dialAdmin(t, plainSock)
	_, err = plain.K8sPSATClusters(testkit.Context(t, 10*time.Second))
	var rpcErr *admin.RPCError
	if !errors.As(err, &rpcErr) || rpcErr.Code != codes.FailedPrecondition || !strings.Contains(rpcErr.Message, "restart") {
		t.Errorf("k8s_psat clusters of a server without the attestor = %v, want FailedPrecondition saying to restart", err)
	}
	// A malformed set is InvalidArgument and changes nothing.
	if _, err := adm.SetK8sPSATClusters(testkit.Context(t, 10*time.Second), map[string]k8spsat.ClusterConfig{"a/b": {ServiceAccountAllowList: []string{"x:y"}}}); !errors.As(err, &rpcErr) || rpcErr.Code != codes.InvalidArgument {
		t.Errorf("SetK8sPSATClusters(bad name) = %v, want InvalidArgument", err)
	}
	if got := names(); got != "west:" {
		t.Errorf("after a refused set the server holds clusters %q, want west alone", got)
	}
}
