package awsiid_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const (
	accessKeyID     = "AKIDEXAMPLEFAKE01"
	secretAccessKey = "fake-secret-access-key"
	account         = "123456789012"
	region          = "us-east-1"
	instanceID      = "i-0123456789abcdef0"
)

var launch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// loadSigner reads a test-only signing key and certificate from testdata.
func loadSigner(t testing.TB, name string) *awsiidtest.Signer {
	t.Helper()
	s, err := awsiidtest.LoadSigner(must(os.ReadFile("testdata/" + name)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testDocument() awsiidtest.Document {
	return awsiidtest.Document{
		AccountID:        account,
		Architecture:     "x86_64",
		AvailabilityZone: "us-east-1a",
		ImageID:          "ami-0abcdef1234567890",
		InstanceID:       instanceID,
		InstanceType:     "m5.large",
		PendingTime:      launch,
		PrivateIP:        "10.0.0.10",
		Region:           region,
	}
}

// testInstance is what DescribeInstances says about testDocument's
// instance: launched with its root volume, two tags, two security groups
// and an instance profile.
func testInstance() awsiidtest.Instance {
	return awsiidtest.Instance{
		ID:             instanceID,
		ImageID:        "ami-0abcdef1234567890",
		InstanceType:   "m5.large",
		RootDeviceName: "/dev/xvda",
		BlockDevices: []awsiidtest.BlockDevice{
			{DeviceName: "/dev/xvda", VolumeID: "vol-0aaaaaaaaaaaaaaaa", AttachTime: launch.Add(2 * time.Second)},
			{DeviceName: "/dev/xvdb", VolumeID: "vol-0bbbbbbbbbbbbbbbb", AttachTime: launch.Add(time.Hour)},
		},
		Interfaces:     []awsiidtest.NetworkInterface{{ID: "eni-0ccccccccccccccc0", DeviceIndex: 0, AttachTime: launch}},
		SecurityGroups: []awsiidtest.SecurityGroup{{ID: "sg-0123456789abcdef0", Name: "web"}, {ID: "sg-0fedcba9876543210", Name: "ssh"}},
		Tags:           []awsiidtest.Tag{{Key: "Name", Value: "web-1"}, {Key: "team", Value: "payments"}},

		InstanceProfileARN: "arn:aws:iam::123456789012:instance-profile/app/web-profile",
	}
}

// fixture is an attestor wired to a fake AWS that knows testInstance, with
// the region's certificate overridden by the test signer's.
type fixture struct {
	signer *awsiidtest.Signer
	aws    *awsiidtest.AWS
	cfg    awsiid.Config
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{signer: loadSigner(t, "signer.pem"), aws: awsiidtest.NewAWS(accessKeyID, secretAccessKey)}
	t.Cleanup(f.aws.Close)
	f.aws.PutInstance(testInstance())
	f.aws.PutInstanceProfile("web-profile", "arn:aws:iam::123456789012:role/web", "arn:aws:iam::123456789012:role/app/metrics")
	f.cfg = awsiid.Config{
		AccessKeyID:         accessKeyID,
		SecretAccessKey:     secretAccessKey,
		SigningCertificates: map[string][]*x509.Certificate{region: {f.signer.Cert}},
		EC2Endpoint:         f.aws.URL(),
		IAMEndpoint:         f.aws.URL(),
		STSEndpoint:         f.aws.URL(),
		HTTPClient:          f.aws.Client(),
	}
	return f
}

func (f *fixture) attestor(t testing.TB, edit func(*awsiid.Config)) *awsiid.Attestor {
	t.Helper()
	cfg := f.cfg
	if edit != nil {
		edit(&cfg)
	}
	a, err := awsiid.New(cfg, td)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return a
}

// payload is what SPIRE's agent sends for document signed by s.
func payload(t testing.TB, s *awsiidtest.Signer, document []byte) []byte {
	t.Helper()
	rsa2048, err := s.Sign(document)
	if err != nil {
		t.Fatal(err)
	}
	return payloadOf(t, string(document), must(s.SignRSA1024(document)), rsa2048)
}

func payloadOf(t testing.TB, document, signature, rsa2048 string) []byte {
	t.Helper()
	out, err := json.Marshal(map[string]string{"document": document, "signature": signature, "rsa2048": rsa2048})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func noChallenge(context.Context, []byte) ([]byte, error) {
	panic("aws_iid sends no challenge")
}
