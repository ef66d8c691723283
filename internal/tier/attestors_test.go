package tier

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/topology"
)

// TestCloudAttestorsFromTheTopology runs what a topology file with aws_iid
// and k8s_psat says, through ServerConfig, Open and AgentConfig only: a
// root whose aws_iid trusts the identity certificate file and the EC2/IAM
// endpoint the file names and whose k8s_psat reviews tokens with the
// cluster the kubeconfig names, and two co-located agents, one reading its
// instance identity document from the metadata endpoint of its agent
// block, one its projected token from the block's token_path. Each attests
// with SPIRE's agent ID and the selectors the file allows.
func TestCloudAttestorsFromTheTopology(t *testing.T) {
	dir := testkit.ShortDir(t)

	// AWS: an instance identity document signed by a test key whose
	// certificate the file names, its instance in a local EC2/IAM API.
	signer, err := awsiidtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	signerPEM, err := signer.PEM()
	if err != nil {
		t.Fatal(err)
	}
	certOnly := signerPEM[strings.Index(string(signerPEM), "-----BEGIN CERTIFICATE-----"):]
	if err := os.WriteFile(filepath.Join(dir, "iid.pem"), certOnly, 0o600); err != nil {
		t.Fatal(err)
	}
	doc := awsiidtest.Document{AccountID: "123456789012", Region: "eu-west-1", AvailabilityZone: "eu-west-1b",
		InstanceID: "i-0fedcba9876543210", ImageID: "ami-0123456789abcdef0", InstanceType: "t3.small",
		PendingTime: time.Now().Add(-time.Hour).UTC().Truncate(time.Second), PrivateIP: "10.1.2.3"}.JSON()
	rsa1024, rsa2048, err := signer.Signatures(doc)
	if err != nil {
		t.Fatal(err)
	}
	imds := awsiidtest.NewPlainIMDS(doc, rsa1024, rsa2048)
	t.Cleanup(imds.Close)
	aws := awsiidtest.NewAWS("AKIDEXAMPLE", "not-a-secret")
	t.Cleanup(aws.Close)
	aws.PutInstance(awsiidtest.Instance{ID: "i-0fedcba9876543210", ImageID: "ami-0123456789abcdef0",
		Tags:               []awsiidtest.Tag{{Key: "team", Value: "payments"}},
		SecurityGroups:     []awsiidtest.SecurityGroup{{ID: "sg-0a1b2c", Name: "web"}},
		InstanceProfileARN: "arn:aws:iam::123456789012:instance-profile/arbor-agent"})
	aws.PutInstanceProfile("arbor-agent", "arn:aws:iam::123456789012:role/arbor-agent")
	// The server's AWS SDK trusts the local API's certificate as it would
	// a private CA's: through AWS_CA_BUNDLE.
	caBundle := filepath.Join(dir, "aws-ca.pem")
	if err := os.WriteFile(caBundle, pemCert(aws.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CA_BUNDLE", caBundle)

	// Kubernetes: one agent pod on one node, its projected token in a file.
	kube, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kube.Close)
	if err := kube.WriteKubeconfig(filepath.Join(dir, "kubeconfig")); err != nil {
		t.Fatal(err)
	}
	kube.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: k8stypes.UID("7f3c1d2e-node-1"), Labels: map[string]string{"zone": "a"}}})
	kube.SetPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: "spire-agent-abc", UID: k8stypes.UID("0a1b2c3d-pod"), Labels: map[string]string{"app": "spire-agent", "team": "x"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "spire-agent"},
		Status:     corev1.PodStatus{HostIP: "10.0.0.7"},
	})
	token, err := kube.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: "spire-agent-abc"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}

	src := fmt.Sprintf(`trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:0"
  health_listen = "off"
  ca_ttl        = "48h"
  node_attestor "aws_iid" {
    access_key_id              = "AKIDEXAMPLE"
    secret_access_key          = "not-a-secret"
    skip_block_device          = true
    account_ids                = ["123456789012"]
    identity_certificate_paths = ["iid.pem"]
    ec2_endpoint               = %[1]q
    iam_endpoint               = %[1]q
  }
  node_attestor "k8s_psat" {
    cluster "prod" {
      service_account_allow_list = ["spire:spire-agent"]
      kube_config_file           = "kubeconfig"
      allowed_pod_label_keys     = ["app"]
    }
  }
}
server "ec2" {
  parent        = "root"
  listen        = "127.0.0.1:0"
  health_listen = "off"
  agent {
    node_attestor "aws_iid" { ec2_metadata_endpoint = %[2]q }
  }
}
server "eks" {
  parent        = "root"
  listen        = "127.0.0.1:0"
  health_listen = "off"
  agent {
    node_attestor "k8s_psat" {
      cluster    = "prod"
      token_path = "token"
    }
  }
}
`, aws.URL(), imds.URL())
	path := filepath.Join(dir, "t.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := topology.ParseFile(path)
	if diags.HasErrors() {
		t.Fatal(topology.FormatDiagnostics(diags, nil))
	}
	ctx := testkit.Context(t, 2*time.Minute)
	tr, err := ServerConfig(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	cfg, closer, err := tr.Open(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	if got := len(cfg.NodeAttestors); got != 2 {
		t.Fatalf("Open built %d node attestors, want aws_iid and k8s_psat", got)
	}
	cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	cfg.HealthAddr = "127.0.0.1:0"
	root := testkit.StartServer(t, cfg)
	bundle := root.Bundles().X509Bundle().X509Authorities()

	for _, c := range []struct {
		node   string
		wantID string
		want   []string // selectors the agent must have
		absent []string // selector types or values it must not have
	}{
		{"ec2", "spiffe://example.org/spire/agent/aws_iid/123456789012/eu-west-1/i-0fedcba9876543210",
			[]string{"aws_iid:tag:team:payments", "aws_iid:sg:id:sg-0a1b2c", "aws_iid:sg:name:web",
				"aws_iid:iamrole:arn:aws:iam::123456789012:role/arbor-agent"}, nil},
		{"eks", "spiffe://example.org/spire/agent/k8s_psat/prod/7f3c1d2e-node-1",
			[]string{"k8s_psat:cluster:prod", "k8s_psat:agent_ns:spire", "k8s_psat:agent_sa:spire-agent",
				"k8s_psat:agent_pod_name:spire-agent-abc", "k8s_psat:agent_node_name:node-1",
				"k8s_psat:agent_pod_label:app:spire-agent"}, []string{"k8s_psat:agent_pod_label:team:x"}},
	} {
		t.Run(c.node, func(t *testing.T) {
			acfg, err := AgentConfig(f, c.node)
			if err != nil {
				t.Fatal(err)
			}
			if acfg.NodeAttestor == nil {
				t.Fatal("AgentConfig set no node attestor")
			}
			// The file's address of root is its listen address, :0 here.
			acfg.ServerAddress, acfg.ServerAddresses = root.AgentAddr().String(), nil
			acfg.TrustBundle = bundle
			acfg.DataDir = filepath.Join(dir, c.node+"-data")
			acfg.SocketPath = filepath.Join(dir, c.node+".sock")
			acfg.SyncInterval = time.Second
			ag, err := runAgent(t, acfg)
			if err != nil {
				t.Fatalf("agent stopped before attesting: %v", err)
			}
			if got := ag.SPIFFEID().String(); got != c.wantID {
				t.Errorf("agent ID = %s, want %s", got, c.wantID)
			}
			got, err := agentv1.NewAgentClient(root.Admin).GetAgent(ctx, &agentv1.GetAgentRequest{Id: &types.SPIFFEID{
				TrustDomain: "example.org", Path: strings.TrimPrefix(c.wantID, "spiffe://example.org")}})
			if err != nil {
				t.Fatal(err)
			}
			var have []string
			for _, s := range got.GetSelectors() {
				have = append(have, s.GetType()+":"+s.GetValue())
			}
			for _, w := range c.want {
				if !slices.Contains(have, w) {
					t.Errorf("agent selectors %v lack %s", have, w)
				}
			}
			for _, a := range c.absent {
				if slices.Contains(have, a) {
					t.Errorf("agent selectors %v hold %s, which the file does not allow", have, a)
				}
			}
		})
	}

	// The same instance identity document again, from another agent: trust
	// on first use refuses it and stores nothing. A join token, which root
	// does not accept, is counted under "other".
	replay, err := AgentConfig(f, "ec2")
	if err != nil {
		t.Fatal(err)
	}
	replay.ServerAddress, replay.ServerAddresses, replay.TrustBundle = root.AgentAddr().String(), nil, bundle
	replay.DataDir, replay.SocketPath = filepath.Join(dir, "replay-data"), filepath.Join(dir, "replay.sock")
	if _, err := runAgent(t, replay); err == nil || !strings.Contains(err.Error(), "already been used") {
		t.Errorf("a second agent with the same instance identity document: %v, want refused as already used", err)
	}
	jt := replay
	jt.NodeAttestor, jt.JoinToken = nil, "not-a-token"
	jt.DataDir, jt.SocketPath = filepath.Join(dir, "token-data"), filepath.Join(dir, "token.sock")
	if _, err := runAgent(t, jt); err == nil {
		t.Error("a join-token agent attested to a root that accepts no join tokens")
	}
	agents, err := agentv1.NewAgentClient(root.Admin).CountAgents(ctx, &agentv1.CountAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if agents.Count != 2 {
		t.Errorf("root holds %d agents after the refusals, want the 2 attested", agents.Count)
	}
	counts := attestationCounts(t, root.HealthAddr().String())
	for series, want := range map[string]float64{
		`type="aws_iid",outcome="attested"`: 1, `type="aws_iid",outcome="denied"`: 1,
		`type="k8s_psat",outcome="attested"`: 1, `type="other",outcome="invalid"`: 1,
	} {
		if counts[series] != want {
			t.Errorf("arbor_node_attestations_total{%s} = %v, want %v (all: %v)", series, counts[series], want, counts)
		}
	}
}

// runAgent runs an agent until it has attested (it is stopped at the end of
// the test) or has stopped, returning its error.
func runAgent(t *testing.T, cfg agent.Config) (*agent.Agent, error) {
	t.Helper()
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = ag.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s")
		}
	})
	select {
	case <-ag.Ready():
		return ag, nil
	case <-done:
		return nil, runErr
	case <-time.After(60 * time.Second):
		t.Fatal("agent neither attested nor stopped within 60s")
		return nil, nil
	}
}

// attestationCounts reads arbor_node_attestations_total from a server's
// /metrics: labels (as written) to value.
func attestationCounts(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "arbor_node_attestations_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatal(err)
		}
		// Prometheus sorts label names: outcome before type.
		pairs := strings.Split(labels, ",")
		slices.Reverse(pairs)
		out[strings.Join(pairs, ",")] = v
	}
	return out
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestOpenBuildsEveryAttestor: a root accepting every cloud attestor gets
// each one's server half from Open, without calling any cloud; a
// kubeconfig that cannot be read fails Open naming the attestor.
func TestOpenBuildsEveryAttestor(t *testing.T) {
	dir := testkit.ShortDir(t)
	kube, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kube.Close)
	if err := kube.WriteKubeconfig(filepath.Join(dir, "kubeconfig")); err != nil {
		t.Fatal(err)
	}
	src := func(kubeconfig string) string {
		return fmt.Sprintf(`trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:0"
  health_listen = "off"
  node_attestor "aws_iid" {}
  node_attestor "gcp_iit" {
    projectid_allow_list = ["arbor-prod"]
    keys_url             = "https://127.0.0.1:1/keys"
  }
  node_attestor "azure_msi" {
    login_endpoint = "https://127.0.0.1:1/"
    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {
      subscription_id = "11111111-1111-1111-1111-111111111111"
      app_id          = "22222222-2222-2222-2222-222222222222"
      app_secret      = "not-a-secret"
    }
  }
  node_attestor "k8s_psat" {
    cluster "prod" {
      service_account_allow_list = ["spire:spire-agent"]
      kube_config_file           = %q
    }
  }
}
`, kubeconfig)
	}
	open := func(kubeconfig string) ([]string, error) {
		path := filepath.Join(dir, "t.hcl")
		if err := os.WriteFile(path, []byte(src(kubeconfig)), 0o600); err != nil {
			t.Fatal(err)
		}
		f, diags := topology.ParseFile(path)
		if diags.HasErrors() {
			t.Fatal(topology.FormatDiagnostics(diags, nil))
		}
		tr, err := ServerConfig(f, "root")
		if err != nil {
			t.Fatal(err)
		}
		cfg, closer, err := tr.Open(testkit.Context(t, 30*time.Second), nil)
		if err != nil {
			return nil, err
		}
		closer.Close()
		var types []string
		for _, a := range cfg.NodeAttestors {
			types = append(types, a.Type())
		}
		slices.Sort(types)
		return types, nil
	}
	types, err := open(filepath.Join(dir, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"aws_iid", "azure_msi", "gcp_iit", "k8s_psat"}; !slices.Equal(types, want) {
		t.Errorf("Open built node attestors %v, want %v", types, want)
	}
	if _, err := open(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), `node_attestor "k8s_psat"`) {
		t.Errorf("Open with a missing kubeconfig = %v, want an error naming node_attestor \"k8s_psat\"", err)
	}
}
