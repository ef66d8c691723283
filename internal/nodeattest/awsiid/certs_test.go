package awsiid_test

import (
	"bufio"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
)

// The shipped certificates are AWS's RSA-2048 instance identity
// certificates (EC2 user guide, "AWS public certificates for instance
// identity document signatures"). Each must be one self-signed RSA-2048
// certificate of Amazon Web Services LLC, valid now, and every region
// listed in testdata/certs_crosscheck.txt must match the independent copy
// named there.

func shippedPEM(t *testing.T, region string) []string {
	t.Helper()
	data, err := os.ReadFile("certs/rsa2048/" + region + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[1 : len(lines)-1]
}

func TestShippedCertificates(t *testing.T) {
	regions := awsiid.Regions()
	if len(regions) < 36 {
		t.Fatalf("Regions() = %d regions, want at least the 36 shipped", len(regions))
	}
	for _, region := range regions {
		data, err := os.ReadFile("certs/rsa2048/" + region + ".pem")
		if err != nil {
			t.Fatal(err)
		}
		block, rest := pem.Decode(data)
		if block == nil || len(strings.TrimSpace(string(rest))) != 0 {
			t.Errorf("%s: not exactly one PEM block", region)
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Errorf("%s: %v", region, err)
			continue
		}
		if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
			t.Errorf("%s: self-signature does not verify: %v", region, err)
		}
		if key, ok := cert.PublicKey.(*rsa.PublicKey); !ok || key.N.BitLen() != 2048 {
			t.Errorf("%s: key is not RSA-2048", region)
		}
		if !slices.Equal(cert.Subject.Organization, []string{"Amazon Web Services LLC"}) || !slices.Equal(cert.Issuer.Organization, cert.Subject.Organization) {
			t.Errorf("%s: subject %v, issuer %v; want Amazon Web Services LLC, self-issued", region, cert.Subject, cert.Issuer)
		}
		if now := time.Now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			t.Errorf("%s: valid %v to %v, not now", region, cert.NotBefore, cert.NotAfter)
		}
	}
}

func TestShippedCertificatesMatchIndependentCopies(t *testing.T) {
	f, err := os.Open("testdata/certs_crosscheck.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checked := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 4 {
			t.Fatalf("malformed line %q", line)
		}
		region, first, last := fields[0], fields[1], fields[2]
		body := shippedPEM(t, region)
		if body[0] != first || body[len(body)-1] != last {
			t.Errorf("%s: shipped certificate starts %q and ends %q, the copy in %s %q and %q", region, body[0], body[len(body)-1], fields[3], first, last)
		}
		checked[region] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(checked) < 31 {
		t.Errorf("%d regions cross-checked, want at least 31", len(checked))
	}
}

// TestRealAWSSignature verifies an RSA-2048 signature made by AWS
// (ap-southeast-2, 2026, published as a test fixture in a public repository)
// with the shipped certificate: the BER encoding, the attribute set and the
// signer identification of real AWS output are what the parser expects.
func TestRealAWSSignature(t *testing.T) {
	doc := must(os.ReadFile("testdata/aws/ap-southeast-2.document"))
	rsa2048 := string(must(os.ReadFile("testdata/aws/ap-southeast-2.rsa2048")))
	a, err := awsiid.New(awsiid.Config{}, td)
	if err != nil {
		t.Fatal(err)
	}
	got, raw, err := a.VerifyPayload(payloadOf(t, string(doc), "", rsa2048))
	if err != nil {
		t.Fatalf("VerifyPayload(real AWS signature) = %v", err)
	}
	want := awsiid.InstanceIdentityDocument{
		AccountID:        "189292791360",
		InstanceID:       "i-0c5541936caf78c12",
		Region:           "ap-southeast-2",
		AvailabilityZone: "ap-southeast-2a",
		ImageID:          "ami-0cbde744623b7506b",
		InstanceType:     "t4g.small",
	}
	if got != want || string(raw) != string(doc) {
		t.Errorf("VerifyPayload() = %+v, %q; want %+v from the document", got, raw, want)
	}

	// The same signature with one byte of the document changed, and with
	// the region's certificate overridden by another.
	tampered := strings.Replace(string(doc), "t4g.small", "t4g.large", 1)
	if _, _, err := a.VerifyPayload(payloadOf(t, tampered, "", rsa2048)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("VerifyPayload(tampered document) = %v, want ErrDenied", err)
	}
	other := loadSigner(t, "signer.pem")
	b, err := awsiid.New(awsiid.Config{SigningCertificates: map[string][]*x509.Certificate{"ap-southeast-2": {other.Cert}}}, td)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.VerifyPayload(payloadOf(t, string(doc), "", rsa2048)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("VerifyPayload() with the region's certificate overridden = %v, want ErrDenied", err)
	}
}

// TestEveryRegionOverride checks EveryRegionSigningCertificates: it
// replaces the shipped certificate of a region arbor ships (the real AWS
// signature no longer verifies), covers a region arbor ships none for, and
// yields to a region's own override.
func TestEveryRegionOverride(t *testing.T) {
	own := loadSigner(t, "signer.pem")
	other, err := awsiidtest.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	doc := must(os.ReadFile("testdata/aws/ap-southeast-2.document"))
	rsa2048 := string(must(os.ReadFile("testdata/aws/ap-southeast-2.rsa2048")))
	a, err := awsiid.New(awsiid.Config{EveryRegionSigningCertificates: []*x509.Certificate{own.Cert}}, td)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.VerifyPayload(payloadOf(t, string(doc), "", rsa2048)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("VerifyPayload(AWS's signature) with every region overridden = %v, want ErrDenied", err)
	}
	for _, region := range []string{"us-east-1", "xx-private-1"} {
		d := awsiidtest.Document{AccountID: "111122223333", InstanceID: "i-0123456789abcdef0", Region: region,
			AvailabilityZone: region + "a", ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro", PendingTime: time.Now()}.JSON()
		sig, err := own.Sign(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.VerifyPayload(payloadOf(t, string(d), "", sig)); err != nil {
			t.Errorf("VerifyPayload(%s, signed by the every-region certificate) = %v", region, err)
		}
		bad, err := other.Sign(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.VerifyPayload(payloadOf(t, string(d), "", bad)); !errors.Is(err, nodeattest.ErrDenied) {
			t.Errorf("VerifyPayload(%s, signed by another key) = %v, want ErrDenied", region, err)
		}
	}
	// A region's own override wins over the every-region one.
	b, err := awsiid.New(awsiid.Config{
		EveryRegionSigningCertificates: []*x509.Certificate{own.Cert},
		SigningCertificates:            map[string][]*x509.Certificate{"us-east-1": {other.Cert}},
	}, td)
	if err != nil {
		t.Fatal(err)
	}
	d := awsiidtest.Document{AccountID: "111122223333", InstanceID: "i-0123456789abcdef0", Region: "us-east-1",
		AvailabilityZone: "us-east-1a", ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro", PendingTime: time.Now()}.JSON()
	sig, err := own.Sign(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.VerifyPayload(payloadOf(t, string(d), "", sig)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("VerifyPayload(us-east-1 signed by the every-region key, region overridden) = %v, want ErrDenied", err)
	}
	if _, err := awsiid.New(awsiid.Config{EveryRegionSigningCertificates: []*x509.Certificate{nil}}, td); err == nil {
		t.Error("New with a nil every-region certificate succeeded")
	}
}
