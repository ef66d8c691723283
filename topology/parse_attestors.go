package topology

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// This file decodes node_attestor blocks: a server's (what it accepts from
// agents) and an agent block's (how the co-located agent attests).

var (
	awsPartitions  = []string{"aws", "aws-cn", "aws-us-gov"}
	awsAccountIDRE = regexp.MustCompile(`^[0-9]{12}$`)
	// iamRoleNameRE is an IAM role name, with its path if any: SPIRE
	// appends assume_role to "role/".
	iamRoleNameRE = regexp.MustCompile(`^[\w+=,.@/-]{1,512}$`)
	// k8sNamespaceRE is a Kubernetes namespace name (an RFC 1123 label);
	// k8sNameRE a service account name (an RFC 1123 subdomain).
	k8sNamespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	k8sNameRE      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// k8sLabelNameRE is the name part of a label key, after the optional
	// "prefix/" (a DNS subdomain).
	k8sLabelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
)

// pathTemplateFuncs are the functions an agent_path_template may call: the
// sprig functions arbor's x509pop and aws_iid attestors offer, as SPIRE's
// do. The parser only checks that a template parses, so they do nothing.
var pathTemplateFuncs = func() template.FuncMap {
	m := template.FuncMap{}
	for _, name := range []string{"lower", "upper", "trim", "trimAll", "trimPrefix", "trimSuffix", "replace",
		"contains", "hasPrefix", "hasSuffix", "base", "dir", "sha1sum", "sha256sum"} {
		m[name] = func(...string) string { return "" }
	}
	return m
}()

// unknownAttestor reports a node_attestor block of a kind not in kinds.
func (p *parser) unknownAttestor(b *hcl.Block, kinds []string) {
	kind := b.Labels[0]
	hint := ""
	if sug := suggest(kind, kinds); sug != "" {
		hint = fmt.Sprintf(" Did you mean %q?", sug)
	}
	p.errorf(b.LabelRanges[0], "Unknown node attestor kind",
		"%q is not a node attestor this version supports.%s Use %s.", kind, hint, quotedList(kinds))
}

// nodeAttestor decodes a server's node_attestor "KIND" block.
func (p *parser) nodeAttestor(b *hcl.Block) (NodeAttestor, bool) {
	kind := b.Labels[0]
	schema, ok := nodeAttestorSchemas[kind]
	if !ok {
		p.unknownAttestor(b, sortedKeys(nodeAttestorSchemas))
		return NodeAttestor{}, false
	}
	body := b.Body
	if kind == NodeAttestorAWSIID {
		body = p.refuseAWSIIDUnsupported(body)
	}
	content := p.content(body, schema)
	na := NodeAttestor{Kind: kind}
	a := content.Attributes
	switch kind {
	case NodeAttestorJoinToken:
		na.JoinToken.DefaultTTL = DefaultJoinTokenTTL
		if st := p.durationSetting(a["default_ttl"]); st.rng != nil {
			na.JoinToken.DefaultTTL = st.val
		}
	case NodeAttestorX509PoP:
		if attr, ok := a["ca_bundle_paths"]; ok {
			na.X509PoP.CABundlePaths = p.pathList(attr, "CA bundle", "No CA bundles",
				"x509pop needs at least one PEM file of CA certificates that agent certificates chain to, for example ca_bundle_paths = [\"agent-ca.pem\"].")
		}
		if attr, ok := a["agent_path_template"]; ok {
			na.X509PoP.AgentPathTemplate = p.agentPathTemplate(attr, "x509pop/<fingerprint>")
		}
	case NodeAttestorAWSIID:
		na.AWSIID = p.awsIID(a)
	case NodeAttestorK8sPSAT:
		na.K8sPSAT = p.k8sPSAT(b, content.Blocks.OfType("cluster"))
	case NodeAttestorGCPIIT:
		na.GCPIIT = p.gcpIIT(a)
	case NodeAttestorAzureMSI:
		na.AzureMSI = p.azureMSI(b, a, content.Blocks.OfType("tenant"))
	}
	return na, true
}

var (
	// gcpProjectIDRE is a Google Cloud project ID: 6 to 30 lowercase
	// letters, digits and hyphens, starting with a letter (a domain-scoped
	// project is "domain:id").
	gcpProjectIDRE = regexp.MustCompile(`^([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
	// azureGUIDRE is a tenant or subscription ID as Azure writes them.
	azureGUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// gcpIIT decodes the attributes of a server's node_attestor "gcp_iit".
func (p *parser) gcpIIT(a hcl.Attributes) GCPIIT {
	var c GCPIIT
	if attr, ok := a["projectid_allow_list"]; ok {
		list, ok := p.strList(attr)
		if ok && len(list) == 0 {
			p.errorf(attr.Expr.Range(), "No projects",
				"projectid_allow_list = [] would accept no instance. List the projects whose instances may attest, such as projectid_allow_list = [\"my-project\"].")
		}
		for i, id := range list {
			if !gcpProjectIDRE.MatchString(id) {
				p.errorf(elemRange(attr, i), "Invalid project ID",
					"%q in projectid_allow_list is not a Google Cloud project ID (6 to 30 lowercase letters, digits and hyphens, starting with a letter). Write the project's ID, not its name or number.", id)
				continue
			}
			c.ProjectIDAllowList = append(c.ProjectIDAllowList, id)
		}
	}
	if attr, ok := a["agent_path_template"]; ok {
		c.AgentPathTemplate = p.agentPathTemplate(attr, "gcp_iit/<project>/<instance id>")
	}
	if attr, ok := a["use_instance_metadata"]; ok {
		c.UseInstanceMetadata, _ = p.boolean(attr)
	}
	c.AllowedLabelKeys = p.gcpKeys(a["allowed_label_keys"])
	c.AllowedMetadataKeys = p.gcpKeys(a["allowed_metadata_keys"])
	for _, name := range []string{"allowed_label_keys", "allowed_metadata_keys"} {
		if attr, ok := a[name]; ok && !c.UseInstanceMetadata {
			p.errorf(attr.NameRange, "Needs use_instance_metadata",
				"%s names what the Compute API says about the instance, which the server reads only with use_instance_metadata = true. Add use_instance_metadata = true, or remove %s.", name, name)
		}
	}
	if attr, ok := a["max_metadata_value_size"]; ok {
		if n, ok := p.integer(attr); ok {
			if n < 1 || n > 1<<20 {
				p.errorf(attr.Expr.Range(), "Invalid metadata value size",
					"max_metadata_value_size = %d is not a size between 1 and 1048576 bytes. Remove it for the default, 128.", n)
			} else {
				c.MaxMetadataValueSize = n
			}
		}
	}
	c.ServiceAccountFile = p.optPath(a["service_account_file"])
	for name, dst := range map[string]*string{"keys_url": &c.KeysURL, "compute_endpoint": &c.ComputeEndpoint} {
		if attr, ok := a[name]; ok {
			*dst, _ = p.url(attr, false)
		}
	}
	return c
}

// gcpKeys evaluates a list of label or metadata keys; nil when attr is nil.
func (p *parser) gcpKeys(attr *hcl.Attribute) []string {
	if attr == nil {
		return nil
	}
	list, _ := p.strList(attr)
	var out []string
	for i, k := range list {
		if k == "" || strings.ContainsAny(k, ":= \t\n") {
			p.errorf(elemRange(attr, i), "Invalid key",
				"%q in %s cannot be a key: keys become selectors gcp_iit:label:KEY:VALUE and gcp_iit:metadata:KEY:VALUE, so they hold no ':', '=' or space, and are not empty.", k, attr.Name)
			continue
		}
		out = append(out, k)
	}
	return out
}

// azureMSI decodes a server's node_attestor "azure_msi" and its tenant
// blocks. The app secrets appear in no diagnostic.
func (p *parser) azureMSI(b *hcl.Block, a hcl.Attributes, blocks hcl.Blocks) AzureMSI {
	var c AzureMSI
	if attr, ok := a["agent_path_template"]; ok {
		c.AgentPathTemplate = p.agentPathTemplate(attr, "azure_msi/<tenant>/<principal id>")
	}
	for name, dst := range map[string]*string{"login_endpoint": &c.LoginEndpoint, "sts_endpoint": &c.STSEndpoint, "arm_endpoint": &c.ARMEndpoint} {
		if attr, ok := a[name]; ok {
			*dst, _ = p.url(attr, false)
		}
	}
	if len(blocks) == 0 {
		p.errorf(b.DefRange, "No Azure tenants",
			"An azure_msi attestor accepts the VMs of the tenants it lists, and this one lists none. Add a tenant block for each, for example:\n  tenant \"00000000-0000-0000-0000-000000000000\" {\n    subscription_id = \"11111111-1111-1111-1111-111111111111\"\n  }")
	}
	first := map[string]hcl.Range{}
	for _, tb := range blocks {
		id := tb.Labels[0]
		if !azureGUIDRE.MatchString(id) {
			p.errorf(tb.LabelRanges[0], "Invalid tenant ID",
				"%q is not an Azure tenant ID: write the tenant's directory ID, a lowercase GUID such as \"72f988bf-86f1-41af-91ab-2d7cd011db47\" (tokens carry it in lowercase).", id)
			continue
		}
		if r, dup := first[id]; dup {
			p.errorf(tb.LabelRanges[0], "Duplicate tenant",
				"Tenant %q is already declared at line %d. Merge the two blocks into one.", id, r.Start.Line)
			continue
		}
		first[id] = tb.DefRange
		c.Tenants = append(c.Tenants, p.azureTenant(tb))
	}
	return c
}

func (p *parser) azureTenant(b *hcl.Block) AzureTenant {
	t := AzureTenant{ID: b.Labels[0], Range: b.DefRange}
	a := p.content(b.Body, azureTenantSchema).Attributes
	if attr, ok := a["resource_id"]; ok {
		t.ResourceID, _ = p.nonEmptyStr(attr)
	}
	addSub := func(attr *hcl.Attribute, i int, id string) {
		if !azureGUIDRE.MatchString(id) {
			p.errorf(elemRange(attr, i), "Invalid subscription ID",
				"%q is not an Azure subscription ID: write it as a lowercase GUID, such as \"11111111-1111-1111-1111-111111111111\".", id)
			return
		}
		if !slices.Contains(t.SubscriptionIDs, id) {
			t.SubscriptionIDs = append(t.SubscriptionIDs, id)
		}
	}
	if attr, ok := a["subscription_id"]; ok {
		if id, ok := p.nonEmptyStr(attr); ok {
			addSub(attr, 0, id)
		}
	}
	if attr, ok := a["subscription_ids"]; ok {
		list, _ := p.strList(attr)
		for i, id := range list {
			addSub(attr, i, id)
		}
	}
	if a["subscription_id"] == nil && a["subscription_ids"] == nil {
		p.errorf(b.DefRange, "No subscription",
			"Tenant %q names no subscription, so none of its VMs could attest (arbor does not guess the server's own, as SPIRE does on Azure). Add subscription_id = \"<subscription GUID>\", or subscription_ids = [...] for several.", t.ID)
	}
	key, secret := a["app_id"], a["app_secret"]
	if key != nil {
		t.AppID, _ = p.nonEmptyStr(key)
	}
	if secret != nil {
		t.AppSecret, _ = p.nonEmptyStr(secret)
	}
	switch {
	case key != nil && secret == nil:
		p.errorf(key.NameRange, "Azure app ID without its secret",
			"app_id is set but app_secret is not; the two make one credential. Add app_secret, for example app_secret = env(\"AZURE_CLIENT_SECRET\"), or remove app_id to use the Azure SDK's default credentials.")
	case key == nil && secret != nil:
		p.errorf(secret.NameRange, "Azure app secret without its app ID",
			"app_secret is set but app_id is not; the two make one credential. Add app_id, or remove app_secret to use the Azure SDK's default credentials.")
	}
	return t
}

// refuseAWSIIDUnsupported reports the settings of SPIRE's aws_iid that
// arbor's does not implement, whether written as attributes or as blocks,
// and returns the rest of body.
func (p *parser) refuseAWSIIDUnsupported(body hcl.Body) hcl.Body {
	// The diagnostics of this look are hcl's about the same names, which
	// the errors below replace.
	content, remain, _ := body.PartialContent(awsIIDUnsupported)
	type found struct {
		name string
		rng  hcl.Range
	}
	var all []found
	for name, attr := range content.Attributes {
		all = append(all, found{name, attr.NameRange})
	}
	for _, blk := range content.Blocks {
		all = append(all, found{blk.Type, blk.TypeRange})
	}
	for _, f := range all {
		switch f.name {
		case "verify_organization":
			p.errorf(f.rng, "Unsupported aws_iid setting",
				"verify_organization (SPIRE's check that an instance's account belongs to an AWS Organization) is not supported by arbor's aws_iid attestor. Remove it. To accept only your own accounts' instances, set assume_role to a role that exists only in them: attestation fails where the server cannot assume it.")
		case "validate_eks_cluster_membership":
			p.errorf(f.rng, "Unsupported aws_iid setting",
				"validate_eks_cluster_membership (SPIRE's check that an instance is a node of an EKS cluster) is not supported by arbor's aws_iid attestor. Remove it. Attest agents running in EKS pods with node_attestor \"k8s_psat\" instead, or select the cluster's nodes with aws_iid:tag: selectors in the entries.")
		}
	}
	return remain
}

// awsIID decodes the attributes of a server's node_attestor "aws_iid".
// The secret access key appears in no diagnostic.
func (p *parser) awsIID(a hcl.Attributes) AWSIID {
	c := AWSIID{Partition: DefaultAWSPartition}
	key, secret := a["access_key_id"], a["secret_access_key"]
	if key != nil {
		c.AccessKeyID, _ = p.nonEmptyStr(key)
	}
	if secret != nil {
		c.SecretAccessKey, _ = p.nonEmptyStr(secret)
	}
	switch {
	case key != nil && secret == nil:
		p.errorf(key.NameRange, "AWS access key without its secret",
			"access_key_id is set but secret_access_key is not; the two make one credential. Add secret_access_key, for example secret_access_key = env(\"AWS_SECRET_ACCESS_KEY\"), or remove access_key_id to use the default credential chain (environment, shared files, the server's instance role).")
	case key == nil && secret != nil:
		p.errorf(secret.NameRange, "AWS secret key without its access key ID",
			"secret_access_key is set but access_key_id is not; the two make one credential. Add access_key_id, or remove secret_access_key to use the default credential chain (environment, shared files, the server's instance role).")
	}
	if attr, ok := a["assume_role"]; ok {
		c.AssumeRole, _ = p.iamRoleName(attr)
	}
	if st := p.enumSetting(a["partition"], awsPartitions); st.rng != nil {
		c.Partition = st.val
	}
	if attr, ok := a["skip_block_device"]; ok {
		c.SkipBlockDevice, _ = p.boolean(attr)
	}
	if attr, ok := a["disable_instance_profile_selectors"]; ok {
		c.DisableInstanceProfileSelectors, _ = p.boolean(attr)
	}
	c.AccountIDsForLocalValidation = p.awsAccountIDs(a["account_ids_for_local_validation"])
	if attr, ok := a["account_ids"]; ok {
		c.AccountIDs = p.awsAccountIDs(attr)
		if list, ok := p.strList(attr); ok && len(list) == 0 {
			p.errorf(attr.Expr.Range(), "No AWS accounts",
				"account_ids = [] would accept no instance at all. List the accounts whose instances may attest, such as account_ids = [\"123456789012\"], or remove the attribute to accept any account.")
		}
	}
	if attr, ok := a["agent_path_template"]; ok {
		c.AgentPathTemplate = p.agentPathTemplate(attr, "aws_iid/<account>/<region>/<instance>")
	}
	if attr, ok := a["identity_certificate_paths"]; ok {
		c.IdentityCertificatePaths = p.pathList(attr, "identity certificate", "No identity certificates",
			"identity_certificate_paths replaces the AWS certificates that verify instance identity documents, so it needs at least one PEM file, for example identity_certificate_paths = [\"aws-iid-rsa2048.pem\"]. Remove the attribute to use AWS's.")
	}
	for name, dst := range map[string]*string{"ec2_endpoint": &c.EC2Endpoint, "iam_endpoint": &c.IAMEndpoint, "sts_endpoint": &c.STSEndpoint} {
		if attr, ok := a[name]; ok {
			*dst, _ = p.url(attr, false)
		}
	}
	return c
}

// awsAccountIDs evaluates a list of 12-digit AWS account IDs; nil when attr
// is nil.
func (p *parser) awsAccountIDs(attr *hcl.Attribute) []string {
	if attr == nil {
		return nil
	}
	ids, _ := p.strList(attr)
	var out []string
	for i, id := range ids {
		if !awsAccountIDRE.MatchString(id) {
			p.errorf(elemRange(attr, i), "Invalid AWS account ID",
				"%q in %s is not an AWS account ID. Write the account's 12 digits as a string, such as \"123456789012\".", id, attr.Name)
			continue
		}
		out = append(out, id)
	}
	return out
}

// iamRoleName evaluates aws_iid's assume_role: a role name, which SPIRE
// turns into an ARN in each instance's account.
func (p *parser) iamRoleName(attr *hcl.Attribute) (string, bool) {
	v, ok := p.nonEmptyStr(attr)
	if !ok {
		return "", false
	}
	if strings.HasPrefix(v, "arn:") {
		name := v
		if _, after, found := strings.Cut(v, ":role/"); found {
			name = after
		}
		p.errorf(attr.Expr.Range(), "Role ARN in assume_role",
			"assume_role is a role name, not an ARN: for each instance the server assumes arn:PARTITION:iam::ACCOUNT:role/NAME in the instance's own account. Write assume_role = %q.", name)
		return "", false
	}
	if !iamRoleNameRE.MatchString(v) {
		p.errorf(attr.Expr.Range(), "Invalid IAM role name",
			"assume_role = %q is not an IAM role name. Use letters, digits and +=,.@_-, such as \"spire-server-delegate\".", v)
		return "", false
	}
	return v, true
}

// k8sPSAT decodes the cluster blocks of a server's node_attestor "k8s_psat".
func (p *parser) k8sPSAT(b *hcl.Block, blocks hcl.Blocks) K8sPSAT {
	var k K8sPSAT
	if len(blocks) == 0 {
		p.errorf(b.DefRange, "No Kubernetes clusters",
			"A k8s_psat attestor accepts agents from the clusters it lists, and this one lists none. Add a cluster block for each, for example:\n  cluster \"prod\" {\n    service_account_allow_list = [\"spire:spire-agent\"]\n  }")
	}
	first := map[string]hcl.Range{}
	for _, cb := range blocks {
		name := cb.Labels[0]
		if r, dup := first[name]; dup {
			p.errorf(cb.LabelRanges[0], "Duplicate cluster",
				"Cluster %q is already declared at line %d; its name is what its agents send. Merge the two blocks into one, or rename one of them.", name, r.Start.Line)
			continue
		}
		first[name] = cb.DefRange
		k.Clusters = append(k.Clusters, p.k8sPSATCluster(cb))
	}
	return k
}

func (p *parser) k8sPSATCluster(b *hcl.Block) K8sPSATCluster {
	c := K8sPSATCluster{Name: b.Labels[0], Audience: []string{DefaultK8sPSATAudience}, Range: b.DefRange}
	if err := spiffeid.ValidatePathSegment(c.Name); err != nil {
		p.errorf(b.LabelRanges[0], "Invalid cluster name",
			"%q cannot name a cluster: the name is a segment of its agents' SPIFFE IDs (spiffe://%s/spire/agent/k8s_psat/<cluster>/<node uid>), and %v. Use only letters, digits, '.', '-' and '_'.",
			c.Name, p.tdName(), strings.TrimPrefix(err.Error(), "path segment "))
	}
	content := p.content(b.Body, k8sPSATClusterSchema)
	a := content.Attributes
	if attr, ok := a["service_account_allow_list"]; ok {
		list, ok := p.strList(attr)
		if ok && len(list) == 0 {
			p.errorf(attr.Expr.Range(), "No service accounts",
				"Cluster %q allows no service account, so none of its agents could attest. List the service accounts agents run as, for example service_account_allow_list = [\"spire:spire-agent\"].", c.Name)
		}
		for i, sa := range list {
			if err := checkServiceAccount(sa); err != nil {
				p.errorf(elemRange(attr, i), "Invalid service account",
					"%q in service_account_allow_list: %v. Write each as namespace:name, such as \"spire:spire-agent\".", sa, err)
				continue
			}
			c.ServiceAccountAllowList = append(c.ServiceAccountAllowList, sa)
		}
	}
	if attr, ok := a["audience"]; ok {
		if list, ok := p.strList(attr); ok {
			c.Audience = list
			for i, v := range list {
				if v == "" {
					p.errorf(elemRange(attr, i), "Empty audience",
						"Remove the empty string from audience. An empty list, audience = [], lets the API server check its own audiences.")
				}
			}
		}
	}
	c.KubeConfigFile = p.optPath(a["kube_config_file"])
	c.AllowedNodeLabelKeys = p.labelKeys(a["allowed_node_label_keys"])
	c.AllowedPodLabelKeys = p.labelKeys(a["allowed_pod_label_keys"])
	return c
}

// checkServiceAccount checks a "namespace:name" service account.
func checkServiceAccount(s string) error {
	ns, name, ok := strings.Cut(s, ":")
	switch {
	case !ok:
		return errors.New("no ':' between the namespace and the name")
	case !k8sNamespaceRE.MatchString(ns):
		return fmt.Errorf("%q is not a namespace name (lowercase letters, digits and '-', at most 63)", ns)
	case len(name) > 253 || !k8sNameRE.MatchString(name):
		return fmt.Errorf("%q is not a service account name (lowercase letters, digits, '-' and '.')", name)
	}
	return nil
}

// labelKeys evaluates a list of Kubernetes label keys, name or
// prefix/name; nil when attr is nil.
func (p *parser) labelKeys(attr *hcl.Attribute) []string {
	if attr == nil {
		return nil
	}
	list, _ := p.strList(attr)
	var out []string
	for i, key := range list {
		prefix, name, hasPrefix := strings.Cut(key, "/")
		if !hasPrefix {
			prefix, name = "", key
		}
		if !k8sLabelNameRE.MatchString(name) || (hasPrefix && (len(prefix) > 253 || !k8sNameRE.MatchString(prefix))) {
			p.errorf(elemRange(attr, i), "Invalid label key",
				"%q in %s is not a Kubernetes label key. Write name or prefix/name, such as \"app\" or \"topology.kubernetes.io/zone\".", key, attr.Name)
			continue
		}
		out = append(out, key)
	}
	return out
}

// agentAttestor decodes the node_attestor "KIND" block of an agent block.
func (p *parser) agentAttestor(b *hcl.Block) (AgentAttestor, bool) {
	kind := b.Labels[0]
	schema, ok := agentAttestorSchemas[kind]
	if !ok {
		p.unknownAttestor(b, sortedKeys(agentAttestorSchemas))
		return AgentAttestor{}, false
	}
	na := AgentAttestor{Kind: kind, Range: b.LabelRanges[0]}
	a := p.content(b.Body, schema).Attributes
	switch kind {
	case NodeAttestorJoinToken:
		if attr, ok := a["token"]; ok {
			na.Token, _ = p.nonEmptyStr(attr)
		}
	case NodeAttestorX509PoP:
		na.PrivateKeyPath = p.optPath(a["private_key_path"])
		na.CertificatePath = p.optPath(a["certificate_path"])
		na.IntermediatesPath = p.optPath(a["intermediates_path"])
	case NodeAttestorAWSIID:
		if attr, ok := a["ec2_metadata_endpoint"]; ok {
			na.EC2MetadataEndpoint, _ = p.url(attr, false)
		}
	case NodeAttestorGCPIIT:
		if attr, ok := a["service_account"]; ok {
			na.ServiceAccount, _ = p.nonEmptyStr(attr)
		}
		if attr, ok := a["identity_token_host"]; ok {
			na.IdentityTokenHost, _ = p.nonEmptyStr(attr)
		}
	case NodeAttestorAzureMSI:
		if attr, ok := a["resource_id"]; ok {
			na.ResourceID, _ = p.nonEmptyStr(attr)
		}
		if attr, ok := a["metadata_endpoint"]; ok {
			na.MetadataEndpoint, _ = p.url(attr, false)
		}
	case NodeAttestorK8sPSAT:
		na.clusterRange = b.DefRange
		if attr, ok := a["cluster"]; ok {
			na.clusterRange = attr.Expr.Range()
			na.Cluster, _ = p.nonEmptyStr(attr)
		}
		na.TokenPath = DefaultK8sPSATTokenPath
		if v := p.optPath(a["token_path"]); v != "" {
			na.TokenPath = v
		}
	}
	return na, true
}

// pathList evaluates a list of file paths, relative to the topology file's
// directory, that must not be empty; what names one of them in errors.
func (p *parser) pathList(attr *hcl.Attribute, what, noneSummary, noneDetail string) []string {
	paths, ok := p.strList(attr)
	if ok && len(paths) == 0 {
		p.errorf(attr.Expr.Range(), noneSummary, "%s", noneDetail)
	}
	var out []string
	for i, v := range paths {
		if v == "" {
			p.errorf(elemRange(attr, i), fmt.Sprintf("Empty %s path", what), "Remove the empty string from %s.", attr.Name)
			continue
		}
		out = append(out, p.inputPath(elemRange(attr, i), v))
	}
	return out
}

// agentPathTemplate evaluates an agent_path_template; def describes the
// attestor's default path for the fix hint.
func (p *parser) agentPathTemplate(attr *hcl.Attribute, def string) string {
	v, ok := p.str(attr)
	if !ok {
		return ""
	}
	if _, err := template.New("agent_path_template").Funcs(pathTemplateFuncs).Parse(v); err != nil {
		p.errorf(attr.Expr.Range(), "Invalid agent path template",
			"agent_path_template is not a valid Go text/template: %v. Fix the template, or remove the attribute to use the default %s.", err, def)
	}
	return v
}

// elemRange is where the i-th element of a list attribute is written: the
// element itself in native syntax, else the whole value.
func elemRange(attr *hcl.Attribute, i int) hcl.Range {
	if t, ok := attr.Expr.(*hclsyntax.TupleConsExpr); ok && i < len(t.Exprs) {
		return t.Exprs[i].Range()
	}
	return attr.Expr.Range()
}

// workloadAttestor decodes a workload_attestor "KIND" block of an agent.
func (p *parser) workloadAttestor(b *hcl.Block) (WorkloadAttestor, bool) {
	kind := b.Labels[0]
	schema, ok := workloadAttestorSchemas[kind]
	if !ok {
		kinds := sortedKeys(workloadAttestorSchemas)
		hint := ""
		if sug := suggest(kind, kinds); sug != "" {
			hint = fmt.Sprintf(" Did you mean %q?", sug)
		}
		p.errorf(b.LabelRanges[0], "Unknown workload attestor kind",
			"%q is not a workload attestor this version supports.%s Use %s.", kind, hint, quotedList(kinds))
		return WorkloadAttestor{}, false
	}
	wa := WorkloadAttestor{Kind: kind, Range: b.LabelRanges[0]}
	a := p.content(b.Body, schema).Attributes
	if attr, ok := a["use_new_container_locator"]; ok {
		if v, ok := p.boolean(attr); ok && !v {
			p.errorf(attr.Expr.Range(), "Old container locator",
				"arbor finds containers only with the locator SPIRE calls new (cgroup v1 and v2, every runtime's layout), so use_new_container_locator = false cannot be honoured. Remove the attribute.")
		}
	}
	boolean := func(name string, dst *bool) {
		if attr, ok := a[name]; ok {
			*dst, _ = p.boolean(attr)
		}
	}
	port := func(name string, dst *int) {
		if attr, ok := a[name]; ok {
			if n, ok := p.integer(attr); ok {
				if n < 1 || n > 65535 {
					p.errorf(attr.Expr.Range(), "Invalid port", "%s = %d is not a TCP port (1-65535).", name, n)
					return
				}
				*dst = n
			}
		}
	}
	str := func(name string, dst *string) {
		if attr, ok := a[name]; ok {
			*dst, _ = p.nonEmptyStr(attr)
		}
	}
	switch kind {
	case WorkloadAttestorUnix:
		boolean("discover_workload_path", &wa.Unix.DiscoverWorkloadPath)
	case WorkloadAttestorK8s:
		k := &wa.K8s
		port("kubelet_secure_port", &k.KubeletSecurePort)
		port("kubelet_read_only_port", &k.KubeletReadOnlyPort)
		if a["kubelet_secure_port"] != nil && a["kubelet_read_only_port"] != nil {
			p.errorf(a["kubelet_read_only_port"].NameRange, "Two kubelet ports",
				"kubelet_secure_port and kubelet_read_only_port are two ways to reach the kubelet; set one. The secure port (10250, the default) authenticates the kubelet and the agent.")
		}
		k.KubeletCAPath = p.optPath(a["kubelet_ca_path"])
		boolean("skip_kubelet_verification", &k.SkipKubeletVerification)
		k.TokenPath = p.optPath(a["token_path"])
		k.CertificatePath = p.optPath(a["certificate_path"])
		k.PrivateKeyPath = p.optPath(a["private_key_path"])
		if (a["certificate_path"] == nil) != (a["private_key_path"] == nil) {
			rng := b.DefRange
			if attr := a["certificate_path"]; attr != nil {
				rng = attr.NameRange
			} else if attr := a["private_key_path"]; attr != nil {
				rng = attr.NameRange
			}
			p.errorf(rng, "Kubelet client certificate without its key",
				"certificate_path and private_key_path make one client credential for the kubelet: set both, or neither to use the service account token.")
		}
		boolean("use_anonymous_authentication", &k.UseAnonymousAuthentication)
		str("node_name", &k.NodeName)
		str("node_name_env", &k.NodeNameEnv)
		if attr, ok := a["max_poll_attempts"]; ok {
			if n, ok := p.integer(attr); ok {
				if n < 1 {
					p.errorf(attr.Expr.Range(), "Invalid poll attempts", "max_poll_attempts = %d: ask the kubelet at least once. Remove it for the default, 60.", n)
				} else {
					k.MaxPollAttempts = n
				}
			}
		}
		if st := p.durationSetting(a["poll_retry_interval"]); st.rng != nil {
			k.PollRetryInterval = st.val
		}
		boolean("disable_container_selectors", &k.DisableContainerSelectors)
	case WorkloadAttestorDocker:
		if attr, ok := a["docker_socket_path"]; ok {
			if v, ok := p.nonEmptyStr(attr); ok {
				if strings.Contains(v, "://") && !strings.HasPrefix(v, "unix://") {
					p.errorf(attr.Expr.Range(), "Docker socket not local",
						"docker_socket_path = %q: the agent reaches the Docker Engine API only over its local Unix socket, such as \"unix:///var/run/docker.sock\".", v)
				} else {
					wa.Docker.SocketPath = strings.TrimPrefix(v, "unix://")
					if !strings.HasPrefix(v, "unix://") {
						wa.Docker.SocketPath = resolvePath(p.dir, v)
					}
				}
			}
		}
		str("docker_version", &wa.Docker.APIVersion)
		if attr, ok := a["env_keys"]; ok {
			list, _ := p.strList(attr)
			for i, k := range list {
				if k == "" || strings.ContainsAny(k, "= ") {
					p.errorf(elemRange(attr, i), "Invalid environment variable name", "%q in env_keys is not an environment variable name.", k)
					continue
				}
				wa.Docker.EnvKeys = append(wa.Docker.EnvKeys, k)
			}
		}
	}
	return wa, true
}
