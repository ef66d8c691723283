package awsiid_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

// An agent on an EC2 instance reads its instance identity document from
// the metadata service; the server verifies AWS's signature and asks EC2
// about the instance. Here the metadata service, EC2 and AWS's signing key
// are the local fakes, and the server is told to trust the fake key for
// us-east-1 (in production it uses the AWS certificates arbor ships).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pemData, err := os.ReadFile("testdata/signer.pem")
	if err != nil {
		panic(err)
	}
	signer, err := awsiidtest.LoadSigner(pemData)
	if err != nil {
		panic(err)
	}
	doc := awsiidtest.Document{AccountID: "123456789012", Region: "us-east-1", AvailabilityZone: "us-east-1a",
		InstanceID: "i-0123456789abcdef0", ImageID: "ami-0abcdef1234567890", InstanceType: "m5.large"}.JSON()
	rsa2048, _ := signer.Sign(doc)
	rsa1024, _ := signer.SignRSA1024(doc)
	imds := awsiidtest.NewIMDS(doc, rsa1024, rsa2048)
	defer imds.Close()
	aws := awsiidtest.NewAWS("AKIDEXAMPLE", "secret")
	defer aws.Close()
	aws.PutInstance(awsiidtest.Instance{ID: "i-0123456789abcdef0", ImageID: "ami-0abcdef1234567890", Tags: []awsiidtest.Tag{{Key: "team", Value: "payments"}}})

	// Agent (plugin_data: ec2_metadata_endpoint).
	payload, err := awsiid.AgentPayload(ctx, awsiid.AgentConfig{EC2MetadataEndpoint: imds.URL(), HTTPClient: imds.Client()})
	if err != nil {
		panic(err)
	}

	// Server (plugin_data: access_key_id, secret_access_key, skip_block_device, ...).
	a, err := awsiid.New(awsiid.Config{
		AccessKeyID:         "AKIDEXAMPLE",
		SecretAccessKey:     "secret",
		SkipBlockDevice:     true,
		SigningCertificates: map[string][]*x509.Certificate{"us-east-1": {signer.Cert}},
		EC2Endpoint:         aws.URL(),
		IAMEndpoint:         aws.URL(),
		HTTPClient:          aws.Client(),
	}, spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		panic(err)
	}
	res, err := a.Attest(ctx, payload, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(res.AgentID)
	for _, s := range res.Selectors {
		fmt.Println(s)
	}
	fmt.Println("trust on first use:", res.FirstUse)
	// Output:
	// spiffe://example.org/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0
	// aws_iid:az:us-east-1a
	// aws_iid:image:id:ami-0abcdef1234567890
	// aws_iid:instance:id:i-0123456789abcdef0
	// aws_iid:region:us-east-1
	// aws_iid:tag:team:payments
	// trust on first use: true
}
