package awsiid_test

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
	"github.com/arborid/arbor/internal/selector"
)

func sel(v string) selector.Selector { return selector.Selector{Type: "aws_iid", Value: v} }

// TestAttest attests testInstance end to end against the fake AWS: the
// signature verifies with the overridden certificate, DescribeInstances and
// GetInstanceProfile are called in the document's region with signed
// requests, and the result is SPIRE's agent ID and selectors, trust on
// first use.
func TestAttest(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, nil)
	res, err := a.Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
	if err != nil {
		t.Fatalf("Attest() = %v", err)
	}
	if got, want := res.AgentID.String(), "spiffe://example.org/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0"; got != want {
		t.Errorf("agent ID = %q, want %q", got, want)
	}
	want := []selector.Selector{
		sel("az:us-east-1a"),
		sel("iamrole:arn:aws:iam::123456789012:role/app/metrics"),
		sel("iamrole:arn:aws:iam::123456789012:role/web"),
		sel("image:id:ami-0abcdef1234567890"),
		sel("instance:id:i-0123456789abcdef0"),
		sel("region:us-east-1"),
		sel("sg:id:sg-0123456789abcdef0"),
		sel("sg:id:sg-0fedcba9876543210"),
		sel("sg:name:ssh"),
		sel("sg:name:web"),
		sel("tag:Name:web-1"),
		sel("tag:team:payments"),
	}
	if diff := cmp.Diff(want, res.Selectors); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if !res.FirstUse || res.CanReattest || res.JoinToken != "" {
		t.Errorf("Attest() = FirstUse %v, CanReattest %v, JoinToken %q; want trust on first use only", res.FirstUse, res.CanReattest, res.JoinToken)
	}
	calls := f.aws.Calls()
	if len(calls) != 2 {
		t.Fatalf("AWS calls = %+v, want DescribeInstances and GetInstanceProfile", calls)
	}
	if c := calls[0]; c.Action != "DescribeInstances" || c.Service != "ec2" || c.Region != region || c.AccessKeyID != accessKeyID || !slices.Equal(c.InstanceIDs, []string{instanceID}) {
		t.Errorf("first call = %+v, want DescribeInstances of %s in %s signed with %s", c, instanceID, region, accessKeyID)
	}
	if c := calls[1]; c.Action != "GetInstanceProfile" || c.Service != "iam" {
		t.Errorf("second call = %+v, want GetInstanceProfile", c)
	}
}

// TestAttestDisableInstanceProfileSelectors: no IAM call, no iamrole
// selector.
func TestAttestDisableInstanceProfileSelectors(t *testing.T) {
	f := newFixture(t)
	a := f.attestor(t, func(c *awsiid.Config) { c.DisableInstanceProfileSelectors = true })
	res, err := a.Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
	if err != nil {
		t.Fatalf("Attest() = %v", err)
	}
	for _, s := range res.Selectors {
		if strings.HasPrefix(s.Value, "iamrole:") {
			t.Errorf("selector %v with instance profile selectors disabled", s)
		}
	}
	for _, c := range f.aws.Calls() {
		if c.Action == "GetInstanceProfile" {
			t.Errorf("GetInstanceProfile called with instance profile selectors disabled")
		}
	}
}

// TestAttestAssumeRole: the calls about an instance are made with the
// credentials of the role assumed in the instance's account, and a burst
// of attestations assumes it once and builds one set of clients.
func TestAttestAssumeRole(t *testing.T) {
	f := newFixture(t)
	const others = 4
	for i := range others {
		inst := testInstance()
		inst.ID = "i-0123456789abcdef" + string(rune('1'+i))
		f.aws.PutInstance(inst)
	}
	a := f.attestor(t, func(c *awsiid.Config) { c.AssumeRole = "spire-server-delegate" })
	ctx := testContext(t)
	for i := range others + 1 {
		doc := testDocument()
		if i > 0 {
			doc.InstanceID = "i-0123456789abcdef" + string(rune('0'+i))
		}
		if _, err := a.Attest(ctx, payload(t, f.signer, doc.JSON()), noChallenge); err != nil {
			t.Fatalf("Attest(%s) = %v", doc.InstanceID, err)
		}
	}
	var assumed, described int
	for _, c := range f.aws.Calls() {
		switch c.Action {
		case "AssumeRole":
			assumed++
			if want := "arn:aws:iam::123456789012:role/spire-server-delegate"; c.RoleARN != want || c.AccessKeyID != accessKeyID {
				t.Errorf("AssumeRole call = %+v, want role %s with the configured key", c, want)
			}
		case "DescribeInstances", "GetInstanceProfile":
			described++
			if c.Role != "arn:aws:iam::123456789012:role/spire-server-delegate" {
				t.Errorf("%s signed by %s (role %q), want the assumed role's credentials", c.Action, c.AccessKeyID, c.Role)
			}
		}
	}
	if assumed != 1 || described != 2*(others+1) {
		t.Errorf("AssumeRole calls = %d, instance calls = %d; want 1 and %d", assumed, described, 2*(others+1))
	}
	if n := a.ClientsBuilt(); n != 1 {
		t.Errorf("client sets built = %d, want 1 for one account and region", n)
	}
}

// TestAttestSkipBlockDevice follows SPIRE: a root volume attached more
// than a minute after the primary network interface is refused unless
// skip_block_device is set or the account is one of
// account_ids_for_local_validation; instance-store roots are not checked.
func TestAttestSkipBlockDevice(t *testing.T) {
	swapped := func(i *awsiidtest.Instance) { i.BlockDevices[0].AttachTime = launch.Add(5 * time.Minute) }
	for _, tc := range []struct {
		name    string
		inst    func(*awsiidtest.Instance)
		cfg     func(*awsiid.Config)
		wantErr bool
	}{
		{name: "attached at launch", inst: func(*awsiidtest.Instance) {}},
		{name: "attached 60s after", inst: func(i *awsiidtest.Instance) { i.BlockDevices[0].AttachTime = launch.Add(60 * time.Second) }},
		{name: "attached 61s before", inst: func(i *awsiidtest.Instance) { i.BlockDevices[0].AttachTime = launch.Add(-61 * time.Second) }, wantErr: true},
		{name: "root replaced after launch", inst: swapped, wantErr: true},
		{name: "root replaced, skip_block_device", inst: swapped, cfg: func(c *awsiid.Config) { c.SkipBlockDevice = true }},
		{name: "root replaced, account for local validation", inst: swapped, cfg: func(c *awsiid.Config) { c.LocalValidAccountIDs = []string{account} }},
		{name: "root replaced, other account for local validation", inst: swapped, cfg: func(c *awsiid.Config) { c.LocalValidAccountIDs = []string{"210987654321"} }, wantErr: true},
		{name: "instance store root", inst: func(i *awsiidtest.Instance) { swapped(i); i.RootDeviceType = "instance-store" }},
		{name: "no interface 0", inst: func(i *awsiidtest.Instance) { i.Interfaces[0].DeviceIndex = 1 }, wantErr: true},
		{name: "no root mapping", inst: func(i *awsiidtest.Instance) { i.RootDeviceName = "/dev/sda1" }, wantErr: true},
		{name: "no root mapping, skip_block_device", inst: func(i *awsiidtest.Instance) { i.RootDeviceName = "/dev/sda1" }, cfg: func(c *awsiid.Config) { c.SkipBlockDevice = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			inst := testInstance()
			tc.inst(&inst)
			f.aws.PutInstance(inst)
			_, err := f.attestor(t, tc.cfg).Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
			switch {
			case tc.wantErr && !errors.Is(err, nodeattest.ErrDenied):
				t.Errorf("Attest() = %v, want ErrDenied", err)
			case !tc.wantErr && err != nil:
				t.Errorf("Attest() = %v, want success", err)
			}
		})
	}
}

// flipSignatureByte returns rsa2048 with one byte of the RSA signature
// changed (the signature is the last element before the end-of-contents
// octets that close the three indefinite-length levels).
func flipSignatureByte(t *testing.T, rsa2048 string) string {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(rsa2048, "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	der[len(der)-6-10] ^= 0x01
	return base64.StdEncoding.EncodeToString(der)
}

// TestAttestRefused: each way a payload or instance fails, with the error
// class the API maps to a status.
func TestAttestRefused(t *testing.T) {
	f := newFixture(t)
	other := loadSigner(t, "other-signer.pem")
	doc := testDocument().JSON()
	good := payload(t, f.signer, doc)
	sig := must(f.signer.Sign(doc))
	sig1024 := must(f.signer.SignRSA1024(doc))

	otherDoc := testDocument()
	otherDoc.InstanceID = "i-0aaaaaaaaaaaaaaa1"
	otherJSON := otherDoc.JSON()
	f.aws.PutInstance(func() awsiidtest.Instance { i := testInstance(); i.ID = otherDoc.InstanceID; return i }())

	// An attacker's certificate with the issuer and serial of the real one.
	impostor := must(x509.ParseCertificate(f.signer.Cert.Raw))
	impostorSigner := &awsiidtest.Signer{Key: other.Key, Cert: impostor}

	westDoc := testDocument()
	westDoc.Region, westDoc.AvailabilityZone = "us-west-2", "us-west-2a"
	unknownDoc := testDocument()
	unknownDoc.Region, unknownDoc.AvailabilityZone = "xx-nowhere-1", "xx-nowhere-1a"

	stopped := testInstance()
	stopped.ID, stopped.State = "i-0bbbbbbbbbbbbbbb2", "stopped"
	f.aws.PutInstance(stopped)
	stoppedDoc := testDocument()
	stoppedDoc.InstanceID = stopped.ID
	missingDoc := testDocument()
	missingDoc.InstanceID = "i-0ccccccccccccccc3"

	for _, tc := range []struct {
		name    string
		payload []byte
		cfg     func(*awsiid.Config)
		want    error
		msg     string
	}{
		{name: "malformed JSON", payload: []byte(`{"document":`), want: nodeattest.ErrInvalid, msg: "decoding payload"},
		{name: "JSON of another type", payload: []byte(`{"document":1}`), want: nodeattest.ErrInvalid, msg: "decoding payload"},
		{name: "empty", payload: []byte(``), want: nodeattest.ErrInvalid},
		{name: "no document", payload: payloadOf(t, "", sig1024, sig), want: nodeattest.ErrInvalid, msg: "no document"},
		{name: "RSA-1024 signature only", payload: payloadOf(t, string(doc), sig1024, ""), want: nodeattest.ErrInvalid, msg: "no rsa2048"},
		{name: "rsa2048 not base64", payload: payloadOf(t, string(doc), sig1024, "not*base64"), want: nodeattest.ErrInvalid, msg: "decoding rsa2048"},
		{name: "rsa2048 truncated", payload: payloadOf(t, string(doc), sig1024, base64.StdEncoding.EncodeToString(must(base64.StdEncoding.DecodeString(strings.ReplaceAll(sig, "\n", ""))))[:400]), want: nodeattest.ErrInvalid},
		{name: "rsa2048 is the RSA-1024 signature", payload: payloadOf(t, string(doc), sig1024, sig1024), want: nodeattest.ErrInvalid},
		{name: "signed content not JSON", payload: payload(t, f.signer, []byte("not json")), want: nodeattest.ErrInvalid, msg: "signed document"},
		{name: "signed document lacks instanceId", payload: payload(t, f.signer, []byte(`{"accountId":"123456789012","region":"us-east-1"}`)), want: nodeattest.ErrInvalid, msg: "instanceId"},
		{name: "forged signature byte", payload: payloadOf(t, string(doc), sig1024, flipSignatureByte(t, sig)), want: nodeattest.ErrDenied, msg: "RSA signature verification failed"},
		{name: "signed by another key under the real issuer and serial", payload: payload(t, impostorSigner, doc), want: nodeattest.ErrDenied, msg: "RSA signature verification failed"},
		{name: "signed by another certificate", payload: payload(t, other, doc), want: nodeattest.ErrDenied, msg: "not a trusted instance identity certificate"},
		{
			name:    "signer certificate embedded in the envelope",
			payload: payloadOf(t, string(doc), sig1024, must(other.SignWith(doc, awsiidtest.SignOptions{EmbedCertificates: []*x509.Certificate{other.Cert}}))),
			want:    nodeattest.ErrDenied, msg: "not a trusted instance identity certificate",
		},
		{name: "document swapped after signing", payload: payloadOf(t, string(otherJSON), sig1024, sig), want: nodeattest.ErrDenied, msg: "document differs"},
		{
			name:    "content swapped inside the signature",
			payload: payloadOf(t, string(otherJSON), sig1024, must(f.signer.SignWith(doc, awsiidtest.SignOptions{Content: otherJSON}))),
			want:    nodeattest.ErrDenied, msg: "message digest",
		},
		{name: "region signed by AWS only", payload: payload(t, f.signer, westDoc.JSON()), want: nodeattest.ErrDenied, msg: "us-west-2"},
		{name: "region without a certificate", payload: payload(t, f.signer, unknownDoc.JSON()), want: nodeattest.ErrDenied, msg: "no instance identity certificate"},
		{name: "account not allowed", payload: good, cfg: func(c *awsiid.Config) { c.AccountIDs = []string{"210987654321"} }, want: nodeattest.ErrDenied, msg: "account 123456789012 is not allowed"},
		{name: "instance not found", payload: payload(t, f.signer, missingDoc.JSON()), want: nodeattest.ErrDenied, msg: "not found"},
		{name: "instance stopped", payload: payload(t, f.signer, stoppedDoc.JSON()), want: nodeattest.ErrDenied, msg: "no pending or running instance"},
		{name: "template names a missing tag", payload: good, cfg: func(c *awsiid.Config) { c.AgentPathTemplate = "/{{ .Tags.role }}/{{ .InstanceID }}" }, want: nodeattest.ErrDenied, msg: "role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := f.attestor(t, tc.cfg).Attest(testContext(t), tc.payload, noChallenge)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Attest() = %+v, %v; want %v", res, err, tc.want)
			}
			if other := map[error]error{nodeattest.ErrInvalid: nodeattest.ErrDenied, nodeattest.ErrDenied: nodeattest.ErrInvalid}[tc.want]; errors.Is(err, other) {
				t.Errorf("Attest() = %v, both ErrInvalid and ErrDenied", err)
			}
			if res != nil {
				t.Errorf("Attest() = %+v with error, want nil", res)
			}
			if !strings.HasPrefix(err.Error(), "awsiid: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Attest() error %q, want the awsiid: prefix and %q", err, tc.msg)
			}
		})
	}
}

// TestAttestTagInjection (CVE-2021-27099): instance tags reach the agent ID
// only as whole canonical segments. A tag value that would add "..", an
// empty segment, a percent-encoded slash or a segment of its own is
// refused; the same template with a plain value works.
func TestAttestTagInjection(t *testing.T) {
	const tmpl = "/{{ .PluginName }}/{{ .Tags.team }}/{{ .InstanceID }}"
	for _, tc := range []struct {
		value string
		want  string // agent ID path; "" means refused
	}{
		{value: "payments", want: "/spire/agent/aws_iid/payments/i-0123456789abcdef0"},
		{value: "../../../admin"},
		{value: ".."},
		{value: "."},
		{value: ""},
		{value: "a/b"},
		{value: "admin/i-0123456789abcdef0"},
		{value: "a//b"},
		{value: "/"},
		{value: "%2F..%2Fadmin"},
		{value: "a%2fb"},
		{value: "a b"},
		{value: "a\nb"},
		{value: "ä"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			f := newFixture(t)
			inst := testInstance()
			inst.Tags = []awsiidtest.Tag{{Key: "team", Value: tc.value}}
			f.aws.PutInstance(inst)
			a := f.attestor(t, func(c *awsiid.Config) { c.AgentPathTemplate = tmpl })
			res, err := a.Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
			if tc.want == "" {
				if !errors.Is(err, nodeattest.ErrDenied) {
					t.Fatalf("Attest() with team=%q = %+v, %v; want ErrDenied", tc.value, res, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest() with team=%q = %v", tc.value, err)
			}
			if got := res.AgentID.Path(); got != tc.want {
				t.Errorf("agent ID path = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAgentPathTemplate renders SPIRE-style templates.
func TestAgentPathTemplate(t *testing.T) {
	for _, tc := range []struct{ tmpl, want string }{
		{"", "/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0"},
		{awsiid.DefaultAgentPathTemplate, "/spire/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0"},
		{"/{{ .PluginName }}/{{ .Region }}/{{ .Tags.Name }}", "/spire/agent/aws_iid/us-east-1/web-1"},
		{"/{{ .TrustDomain }}/{{ .InstanceID | upper }}", "/spire/agent/example.org/I-0123456789ABCDEF0"},
		{`/{{ index .Tags "team" }}/{{ .AccountID | trimPrefix "1234" }}`, "/spire/agent/payments/56789012"},
		{"/{{ .InstanceID | sha256sum }}", "/spire/agent/57df73291f7c539919b062b1a6e8a901d79213c2900cdddcc1d56dcf35f78b49"},
	} {
		t.Run(tc.tmpl, func(t *testing.T) {
			f := newFixture(t)
			a := f.attestor(t, func(c *awsiid.Config) { c.AgentPathTemplate = tc.tmpl })
			res, err := a.Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
			if err != nil {
				t.Fatalf("Attest() = %v", err)
			}
			if got := res.AgentID.Path(); got != tc.want {
				t.Errorf("template %q: agent ID path = %q, want %q", tc.tmpl, got, tc.want)
			}
		})
	}
}

// TestNewRefusesConfig: configuration errors are reported by New, naming
// the field.
func TestNewRefusesConfig(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		edit func(*awsiid.Config)
		msg  string
	}{
		{"access key without secret", func(c *awsiid.Config) { c.SecretAccessKey = "" }, "go together"},
		{"unknown partition", func(c *awsiid.Config) { c.Partition = "aws-mars" }, "partition"},
		{"role name with a colon", func(c *awsiid.Config) { c.AssumeRole = "arn:aws:iam::1:role/x" }, "assume_role"},
		{"account not 12 digits", func(c *awsiid.Config) { c.AccountIDs = []string{"1234"} }, "account_ids"},
		{"local account not 12 digits", func(c *awsiid.Config) { c.LocalValidAccountIDs = []string{"x"} }, "account_ids_for_local_validation"},
		{"template does not parse", func(c *awsiid.Config) { c.AgentPathTemplate = "/{{ .InstanceID " }, "agent path template"},
		{"template uses an unknown function", func(c *awsiid.Config) { c.AgentPathTemplate = "/{{ env \"HOME\" }}" }, "agent path template"},
		{"relative endpoint", func(c *awsiid.Config) { c.EC2Endpoint = "ec2.local" }, "endpoint"},
		{"certificate for an invalid region", func(c *awsiid.Config) {
			c.SigningCertificates = map[string][]*x509.Certificate{"../x": {f.signer.Cert}}
		}, "region"},
		{"empty certificate override", func(c *awsiid.Config) { c.SigningCertificates = map[string][]*x509.Certificate{region: nil} }, "empty"},
		{"negative timeout", func(c *awsiid.Config) { c.Timeout = -time.Second }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg
			tc.edit(&cfg)
			a, err := awsiid.New(cfg, td)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("New() = %v, %v; want an error about %s", a, err, tc.msg)
			}
		})
	}
	if _, err := awsiid.New(f.cfg, spiffeid.TrustDomain{}); err == nil {
		t.Error("New() with the zero trust domain succeeded")
	}
}

// TestAttestAWSFailures: AWS refusing the server's credentials, redirecting
// or answering without bound is an internal error (neither ErrInvalid nor
// ErrDenied, so its text stays on the server), and no redirect is
// followed.
func TestAttestAWSFailures(t *testing.T) {
	var followed bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed = true }))
	defer target.Close()
	redirect := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	huge := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		w.Write([]byte("<DescribeInstancesResponse>"))
		for range 1 << 11 {
			w.Write([]byte("<x>" + strings.Repeat("a", 1<<10) + "</x>"))
		}
	}))
	defer huge.Close()

	f := newFixture(t)
	for _, tc := range []struct {
		name string
		edit func(*awsiid.Config)
		msg  string
	}{
		{"wrong secret", func(c *awsiid.Config) { c.SecretAccessKey = "wrong" }, "SignatureDoesNotMatch"},
		{"unknown access key", func(c *awsiid.Config) { c.AccessKeyID = "AKIDUNKNOWN" }, "SignatureDoesNotMatch"},
		{"redirect", func(c *awsiid.Config) { c.EC2Endpoint, c.HTTPClient = redirect.URL, redirect.Client() }, "307"},
		{"oversized answer", func(c *awsiid.Config) { c.EC2Endpoint, c.HTTPClient = huge.URL, huge.Client() }, "size limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.attestor(t, func(c *awsiid.Config) {
				tc.edit(c)
				c.Timeout = 5 * time.Second
			})
			_, err := a.Attest(testContext(t), payload(t, f.signer, testDocument().JSON()), noChallenge)
			if err == nil || errors.Is(err, nodeattest.ErrInvalid) || errors.Is(err, nodeattest.ErrDenied) {
				t.Fatalf("Attest() = %v, want an internal error", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Attest() = %v, want it to mention %q", err, tc.msg)
			}
		})
	}
	if followed {
		t.Error("the EC2 client followed a redirect")
	}
}
