// Package awsiid attests nodes running on Amazon EC2 by their instance
// identity document (SPIRE's "aws_iid" attestation type): the agent sends
// the document and AWS's signatures of it from the instance metadata
// service (AgentPayload), and the server verifies the RSA-2048 signature
// against AWS's certificate for the document's region, looks the instance
// up with DescribeInstances in its account and returns the agent ID and
// SPIRE's selectors (Attestor). The JSON is SPIRE's, so either half can
// face a real SPIRE v1.13 peer.
//
// The document is not a secret — any process on the instance can read it —
// so an attestation is trust on first use: the server accepts one per
// instance until that agent is evicted (nodeattest.Result.FirstUse).
package awsiid

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/selector"
)

// Type is the attestation data type, and the type of the selectors produced.
const Type = "aws_iid"

// DefaultTimeout bounds the AWS calls of one attestation (SPIRE: 5s).
const DefaultTimeout = 10 * time.Second

// Partitions are the AWS partitions Config.Partition may name.
var partitions = []string{"aws", "aws-cn", "aws-us-gov"}

var roleNamePattern = regexp.MustCompile(`^[\w+=,.@/-]{1,512}$`)

// Config configures an Attestor. The fields with SPIRE names mirror the
// server plugin_data of SPIRE's aws_iid NodeAttestor. It must not be
// modified after New.
type Config struct {
	// AccessKeyID and SecretAccessKey (access_key_id, secret_access_key)
	// are static credentials for the AWS calls; both or neither. Empty
	// means the SDK's default chain (environment, shared files, web
	// identity, ECS/EC2 roles), which also covers SPIRE's fallback to
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	AccessKeyID     string
	SecretAccessKey string
	// AssumeRole (assume_role) is a role name assumed in the instance's own
	// account, as arn:<Partition>:iam::<account>:role/<AssumeRole>, for
	// every call about that instance. Empty: the credentials above are
	// used directly.
	AssumeRole string
	// Partition (partition) is "aws", "aws-cn" or "aws-us-gov"; empty means
	// "aws". It is the partition of the role ARNs.
	Partition string

	// SkipBlockDevice (skip_block_device) turns off the check that the
	// instance's root EBS volume was attached at launch (within 60s of the
	// primary network interface).
	SkipBlockDevice bool
	// DisableInstanceProfileSelectors (disable_instance_profile_selectors)
	// skips the IAM GetInstanceProfile call, and so the iamrole selectors.
	DisableInstanceProfileSelectors bool
	// LocalValidAccountIDs (SPIRE's account_ids_for_local_validation, its
	// LocalValidAcctIDs field) are accounts whose instances skip the block
	// device check, as in SPIRE. It is not an allow-list: see AccountIDs.
	LocalValidAccountIDs []string
	// AccountIDs, when not empty, are the only accounts whose instances may
	// attest (arbor's; SPIRE restricts accounts only through its
	// verify_organization block, which arbor does not implement).
	AccountIDs []string

	// AgentPathTemplate (agent_path_template) is a text/template for the
	// agent ID's path below /spire/agent, with SPIRE's data: .PluginName
	// ("aws_iid"), .AccountID, .Region, .InstanceID, .TrustDomain and
	// .Tags (the instance's tags, key -> value), and sprig's lower, upper,
	// trim, trimAll, trimPrefix, trimSuffix, replace, contains, hasPrefix,
	// hasSuffix, base, dir, sha1sum and sha256sum. A missing tag is an
	// error. If empty, DefaultAgentPathTemplate is used.
	AgentPathTemplate string

	// SigningCertificates overrides the RSA-2048 instance identity
	// certificates arbor ships (one per AWS region, Regions): a region in
	// the map trusts exactly the certificates given for it, for private
	// regions and tests. Other regions keep AWS's certificate.
	SigningCertificates map[string][]*x509.Certificate
	// EveryRegionSigningCertificates, when not empty, replaces the shipped
	// certificates of every region, including regions arbor ships none
	// for: a region not in SigningCertificates trusts exactly these (a
	// private partition, a test fake that signs for any region).
	EveryRegionSigningCertificates []*x509.Certificate

	// EC2Endpoint, IAMEndpoint and STSEndpoint, when set, replace the SDK's
	// endpoints for DescribeInstances, GetInstanceProfile and AssumeRole
	// (VPC endpoints, private regions, tests); absolute URLs.
	EC2Endpoint string
	IAMEndpoint string
	STSEndpoint string
	// HTTPClient is the client the SDK calls AWS with; nil means a default
	// one. Redirects are never followed and responses are bounded either
	// way.
	HTTPClient *http.Client
	// Timeout bounds the AWS calls of one attestation; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// Attestor verifies aws_iid attestations on the server. It is safe for
// concurrent use.
type Attestor struct {
	td       spiffeid.TrustDomain
	cfg      Config
	anchors  map[string][]*anchor
	path     *pathTemplate
	clients  *clientCache
	accounts map[string]bool // nil: any account
	local    map[string]bool
}

var _ nodeattest.Attestor = (*Attestor)(nil)

// New checks cfg and parses the instance identity certificates and the
// path template. It does not call AWS.
func New(cfg Config, td spiffeid.TrustDomain) (*Attestor, error) {
	if td.IsZero() {
		return nil, errors.New("awsiid: trust domain is required")
	}
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		return nil, errors.New("awsiid: access_key_id and secret_access_key go together")
	}
	if cfg.Partition == "" {
		cfg.Partition = "aws"
	}
	if !slices.Contains(partitions, cfg.Partition) {
		return nil, fmt.Errorf("awsiid: partition %q is not one of %v", cfg.Partition, partitions)
	}
	if cfg.AssumeRole != "" && !roleNamePattern.MatchString(cfg.AssumeRole) {
		return nil, fmt.Errorf("awsiid: assume_role %q is not a valid IAM role name", cfg.AssumeRole)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("awsiid: negative timeout %v", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	for _, e := range []string{cfg.EC2Endpoint, cfg.IAMEndpoint, cfg.STSEndpoint} {
		if e == "" {
			continue
		}
		if u, err := url.Parse(e); err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("awsiid: endpoint %q is not an absolute URL", e)
		}
	}
	a := &Attestor{td: td}
	var err error
	if a.accounts, err = accountSet("account_ids", cfg.AccountIDs); err != nil {
		return nil, err
	}
	if a.local, err = accountSet("account_ids_for_local_validation", cfg.LocalValidAccountIDs); err != nil {
		return nil, err
	}
	text := cfg.AgentPathTemplate
	if text == "" {
		text = DefaultAgentPathTemplate
	}
	if a.path, err = newPathTemplate(text); err != nil {
		return nil, err
	}
	if a.anchors, err = loadAnchors(cfg.SigningCertificates, cfg.EveryRegionSigningCertificates); err != nil {
		return nil, err
	}
	a.cfg = cfg
	a.clients = newClientCache(&a.cfg)
	return a, nil
}

func accountSet(name string, ids []string) (map[string]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	set := map[string]bool{}
	for _, id := range ids {
		if !accountIDPattern.MatchString(id) {
			return nil, fmt.Errorf("awsiid: %s: %q is not a 12-digit AWS account ID", name, id)
		}
		set[id] = true
	}
	return set, nil
}

// Type returns "aws_iid".
func (a *Attestor) Type() string { return Type }

// Attest verifies the payload's RSA-2048 signature, checks the account
// against AccountIDs, looks the instance up in its account and region
// (assuming AssumeRole there when set), checks its root volume unless
// skipped, and returns the agent ID rendered by the path template with
// SPIRE's selectors:
//
//	aws_iid:az:<availability zone>           aws_iid:image:id:<AMI>
//	aws_iid:instance:id:<instance>           aws_iid:region:<region>
//	aws_iid:tag:<key>:<value>                (each instance tag)
//	aws_iid:sg:id:<group ID>                 aws_iid:sg:name:<group name>
//	aws_iid:iamrole:<role ARN>               (each role of the instance profile, unless disabled)
//
// The document is read only from the signed bytes. The result is trust on
// first use and cannot be re-attested with the same document. It sends no
// challenge.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	vd, err := verifyPayload(payload, a.anchors)
	if err != nil {
		return nil, err
	}
	doc := vd.doc
	if a.accounts != nil && !a.accounts[doc.AccountID] {
		return nil, fmt.Errorf("awsiid: %w: account %s is not allowed to attest", nodeattest.ErrDenied, doc.AccountID)
	}

	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	api, err := a.clients.get(ctx, doc.AccountID, doc.Region)
	if err != nil {
		return nil, fmt.Errorf("awsiid: AWS clients for account %s, region %s: %w", doc.AccountID, doc.Region, err)
	}
	inst, err := describeInstance(ctx, api, doc)
	if err != nil {
		return nil, err
	}
	if !a.cfg.SkipBlockDevice && !a.local[doc.AccountID] {
		if err := checkBlockDevice(inst); err != nil {
			return nil, fmt.Errorf("awsiid: %w: instance %s: %v", nodeattest.ErrDenied, doc.InstanceID, err)
		}
	}

	tags := map[string]string{}
	for _, t := range inst.Tags {
		if t.Key != nil {
			tags[*t.Key] = aws.ToString(t.Value)
		}
	}
	agentID, err := a.path.agentID(a.td, templateData{
		PluginName:  Type,
		TrustDomain: a.td.Name(),
		AccountID:   doc.AccountID,
		Region:      doc.Region,
		InstanceID:  doc.InstanceID,
		Tags:        tags,
	})
	if err != nil {
		return nil, fmt.Errorf("awsiid: %w: instance %s: %v", nodeattest.ErrDenied, doc.InstanceID, err)
	}
	sels, err := a.selectors(ctx, api, doc, inst)
	if err != nil {
		return nil, err
	}
	return &nodeattest.Result{
		AgentID:     agentID,
		Selectors:   sels,
		CanReattest: false,
		FirstUse:    true,
	}, nil
}

func (a *Attestor) selectors(ctx context.Context, api instanceAPI, doc identityDocument, inst ec2types.Instance) ([]selector.Selector, error) {
	var sels []selector.Selector
	add := func(value string) { sels = append(sels, selector.Selector{Type: Type, Value: value}) }
	add("az:" + doc.AvailabilityZone)
	add("image:id:" + doc.ImageID)
	add("instance:id:" + doc.InstanceID)
	add("region:" + doc.Region)
	for _, t := range inst.Tags {
		if t.Key != nil {
			add("tag:" + *t.Key + ":" + aws.ToString(t.Value))
		}
	}
	for _, g := range inst.SecurityGroups {
		add("sg:id:" + aws.ToString(g.GroupId))
		add("sg:name:" + aws.ToString(g.GroupName))
	}
	if !a.cfg.DisableInstanceProfileSelectors && inst.IamInstanceProfile != nil && inst.IamInstanceProfile.Arn != nil {
		name, err := instanceProfileName(*inst.IamInstanceProfile.Arn)
		if err != nil {
			return nil, fmt.Errorf("awsiid: instance %s: %w", doc.InstanceID, err)
		}
		out, err := api.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
		if err != nil {
			return nil, fmt.Errorf("awsiid: getting instance profile %s of %s: %w", name, doc.InstanceID, err)
		}
		if out.InstanceProfile != nil {
			for _, r := range out.InstanceProfile.Roles {
				if r.Arn != nil {
					add("iamrole:" + *r.Arn)
				}
			}
		}
	}
	return selector.Sorted(sels), nil
}
