package e2e

import (
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
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// TestAWSIIDSpireAgentToArbor: a real spire-agent with its own aws_iid
// plugin, its ec2_metadata_endpoint pointed at a local IMDSv2 fake serving a
// signed instance identity document, attests to an arbor server whose
// aws_iid verifies the signature (with the fake signer's certificate given
// for the region, as for a private region) and looks the instance up in a
// local EC2 Query API fake; the agent gets SPIRE's agent ID and selectors
// and serves a workload. A second spire-agent replaying the same document is
// refused while the first is attested (trust on first use). Against every
// SPIRE release.
func TestAWSIIDSpireAgentToArbor(t *testing.T) { forEachSpire(t, testAWSIIDSpireAgentToArbor) }

func testAWSIIDSpireAgentToArbor(t *testing.T, p *spirePeer) {
	signer, err := awsiidtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	doc := awsiidtest.Document{AccountID: "123456789012", Region: "eu-west-1", AvailabilityZone: "eu-west-1b",
		InstanceID: "i-0fedcba9876543210", ImageID: "ami-0123456789abcdef0", InstanceType: "t3.small",
		PendingTime: time.Now().Add(-time.Hour).UTC().Truncate(time.Second), PrivateIP: "10.1.2.3"}.JSON()
	rsa2048, err := signer.Sign(doc)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := signer.SignRSA1024(doc)
	if err != nil {
		t.Fatal(err)
	}
	imds := awsiidtest.NewIMDS(doc, rsa1024, rsa2048)
	t.Cleanup(imds.Close)
	ec2 := awsiidtest.NewAWS("AKIDEXAMPLE", "not-a-secret")
	t.Cleanup(ec2.Close)
	ec2.PutInstance(awsiidtest.Instance{ID: "i-0fedcba9876543210", ImageID: "ami-0123456789abcdef0",
		Tags: []awsiidtest.Tag{{Key: "team", Value: "payments"}}, SecurityGroups: []awsiidtest.SecurityGroup{{ID: "sg-0a1b2c", Name: "web"}}})

	att, err := awsiid.New(awsiid.Config{
		AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "not-a-secret", SkipBlockDevice: true,
		DisableInstanceProfileSelectors: true,
		SigningCertificates:             map[string][]*x509.Certificate{"eu-west-1": {signer.Cert}},
		EC2Endpoint:                     ec2.URL(), IAMEndpoint: ec2.URL(), HTTPClient: ec2.Client(),
	}, td)
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t, "iid")
	ts := testkit.StartServer(t, server.Config{Name: "iid", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(dir, "arbor"), AdminSocket: filepath.Join(dir, "admin.sock"),
		NodeAttestors: []nodeattest.Attestor{att}})
	arbor := &arborServer{adminSock: filepath.Join(dir, "admin.sock"), port: ts.AgentAddr().(*net.TCPAddr).Port, spire: p}
	_, arborPEM := arbor.bundlePEM(t)

	// spire-agent's AWS SDK trusts the fake metadata service's TLS
	// certificate through AWS_CA_BUNDLE.
	caBundle := filepath.Join(dir, "imds-ca.pem")
	if err := os.WriteFile(caBundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: imds.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"AWS_CA_BUNDLE=" + caBundle, "AWS_EC2_METADATA_DISABLED=false"}
	plugin := fmt.Sprintf(`NodeAttestor "aws_iid" {
    plugin_data {
      ec2_metadata_endpoint = %q
    }
  }`, imds.URL())
	spireAgent := startSpireAgentWith(t, p, td.Name(), arbor.port, arborPEM, env, "", plugin)
	wantID := spiffeid.RequireFromPath(td, "/spire/agent/aws_iid/123456789012/eu-west-1/i-0fedcba9876543210")
	var got types.Agent
	poll(t, waitTimeout, "spire-agent attested to arbor with aws_iid", func() error {
		if spireAgent.proc.exited() {
			t.Fatalf("spire-agent exited: %v\n%s", spireAgent.proc.err, tail(spireAgent.proc.log, 30))
		}
		r := arbor.cliRun(t, "agent", "show", "-spiffeID", wantID.String(), "-output", "json")
		if r.err != nil {
			return fmt.Errorf("%v: %s%s", r.err, r.stdout, r.stderr)
		}
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal([]byte(r.stdout), &got)
	})
	var sels []string
	for _, s := range got.GetSelectors() {
		sels = append(sels, s.GetType()+":"+s.GetValue())
	}
	slices.Sort(sels)
	want := []string{"aws_iid:az:eu-west-1b", "aws_iid:image:id:ami-0123456789abcdef0", "aws_iid:instance:id:i-0fedcba9876543210",
		"aws_iid:region:eu-west-1", "aws_iid:sg:id:sg-0a1b2c", "aws_iid:sg:name:web", "aws_iid:tag:team:payments"}
	if !slices.Equal(sels, want) {
		t.Errorf("agent selectors\n  got  %s\n  want %s", strings.Join(sels, " "), strings.Join(want, " "))
	}
	arbor.createEntry(t, wantID, mustID(t, "/wl/iid"), fmt.Sprintf("unix:uid:%d", os.Getuid()))
	spireAgent.waitX509SVID(t, mustID(t, "/wl/iid"))

	// The same document again, from a second spire-agent: refused.
	replay := launchSpireAgent(t, p, td.Name(), arbor.port, arborPEM, env, "", plugin)
	poll(t, waitTimeout, "the replaying spire-agent giving up", func() error {
		if !replay.proc.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if log := replay.proc.logText(t); !strings.Contains(log, "already been used") {
		t.Errorf("the replaying spire-agent's log does not show the refusal:\n%s", tail(replay.proc.log, 15))
	}
	if n := arbor.cli(t, "agent", "count"); !strings.Contains(n, "1 attested") {
		t.Errorf("agent count after the replay: %q, want 1 attested", strings.TrimSpace(n))
	}
}
