package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
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
	rsa1024, rsa2048, err := signer.Signatures(doc)
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
	// spire-agent's AWS SDK trusts the fake metadata service's TLS
	// certificate through AWS_CA_BUNDLE.
	caBundle := filepath.Join(shortTempDir(t, "iidca"), "imds-ca.pem")
	if err := os.WriteFile(caBundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: imds.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"AWS_CA_BUNDLE=" + caBundle, "AWS_EC2_METADATA_DISABLED=false"}
	plugin := fmt.Sprintf(`NodeAttestor "aws_iid" {
    plugin_data {
      ec2_metadata_endpoint = %q
    }
  }`, imds.URL())
	spireAgentAttestsOnce(t, p, "iid", att, env, plugin, spiffeid.RequireFromPath(td, "/spire/agent/aws_iid/123456789012/eu-west-1/i-0fedcba9876543210"),
		[]string{"aws_iid:az:eu-west-1b", "aws_iid:image:id:ami-0123456789abcdef0", "aws_iid:instance:id:i-0fedcba9876543210",
			"aws_iid:region:eu-west-1", "aws_iid:sg:id:sg-0a1b2c", "aws_iid:sg:name:web", "aws_iid:tag:team:payments"})
}
