package topology

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// NodeConfig is the resolved configuration of one server of the topology:
// what a Terraform module or a configuration tool writes to that machine.
// It is a tree of blocks written as HCL (WriteHCL) or as HCL's JSON form
// (WriteJSON); the layout is documented in docs/topology.md ("render").
type NodeConfig struct {
	// Node is the server's name; Source the topology file it came from.
	Node   string
	Source string
	// Body holds trust_domain, the server block, its agent block, its
	// entries (declared and downstream) and the federations.
	Body *Block
}

// Block is one block (or the top-level body) of a rendered configuration:
// attributes in a fixed order, then nested blocks.
type Block struct {
	Type   string
	Labels []string
	Attrs  []Attr
	Blocks []*Block
}

// Attr is one attribute; Value is a string, int, bool, []string or Object.
type Attr struct {
	Name  string
	Value any
}

// Object is an attribute value written as an HCL object expression,
// { KEY = VALUE ... }, items in order; a value may be an Object itself.
// Keys are quoted, as the keys of a map named by the user are (SPIRE's
// k8s_psat clusters), unless Fields says they are attribute names. Only
// RenderSPIRE writes objects.
type Object struct {
	Items  []Attr
	Fields bool
}

// MarshalJSON writes the object with its items in order.
func (o Object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, it := range o.Items {
		if i > 0 {
			b.WriteByte(',')
		}
		v, err := json.Marshal(it.Value)
		if err != nil {
			return nil, err
		}
		b.WriteString(jsonString(it.Name) + ":")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (b *Block) set(name string, v any) *Block {
	b.Attrs = append(b.Attrs, Attr{name, v})
	return b
}

// setIf sets a string attribute only when it is not empty.
func (b *Block) setIf(name, v string) *Block {
	if v != "" {
		b.set(name, v)
	}
	return b
}

func (b *Block) block(typ string, labels ...string) *Block {
	c := &Block{Type: typ, Labels: labels}
	b.Blocks = append(b.Blocks, c)
	return c
}

func dur(d time.Duration) string { return formatDuration(d) }

// Render resolves the configuration of the server named node: a block
// (NAME) or one of its replicas (NAME/K, see File.Replica), whose rendering
// says replica = K and has the replica's own ports and paths.
func Render(f *File, node string) (*NodeConfig, error) {
	s, err := f.Replica(node)
	if err != nil {
		return nil, err
	}
	body := &Block{}
	body.set("trust_domain", f.TrustDomain.Name())

	sb := body.block("server", s.Name)
	sb.setIf("parent", s.Parent)
	if parent := f.server(s.Parent); parent != nil {
		sb.set("parent_address", addressValue(parent))
	}
	sb.set("host", s.Host).
		set("replicas", s.Replicas)
	if s.ReplicaNumber > 1 {
		sb.set("replica", s.ReplicaNumber)
	}
	sb.set("listen", s.Listen).
		set("address", addressValue(s)).
		set("admin_socket", s.AdminSocket).
		set("health_listen", s.HealthListen).
		set("state_dir", s.StateDir).
		set("spiffe_id", s.SPIFFEID.String()).
		set("ca_ttl", dur(s.CATTL)).
		set("x509_svid_ttl", dur(s.X509SVIDTTL)).
		set("jwt_svid_ttl", dur(s.JWTSVIDTTL)).
		set("agent_svid_ttl", dur(s.AgentSVIDTTL)).
		set("key_type", string(s.KeyType)).
		set("jwt_key_type", string(s.JWTKeyType)).
		set("ca_key_storage", s.CAKeyStorage).
		set("log_level", s.LogLevel).
		set("log_format", s.LogFormat).
		set("jwt_issuer", s.JWTIssuer)
	ds := sb.block("datastore", s.Datastore.Kind)
	ds.setIf("path", s.Datastore.Path).setIf("dsn", s.Datastore.DSN)
	if u := s.Upstream; u != nil {
		renderUpstream(sb.block("upstream", u.Kind), u)
	}
	for _, a := range s.NodeAttestors {
		renderNodeAttestor(sb.block("node_attestor", a.Kind), a)
	}

	if be := s.BundleEndpoint; be != nil {
		sb.block("bundle_endpoint").
			set("listen", be.Listen).
			set("profile", be.Profile).
			set("refresh_hint", dur(be.RefreshHint)).
			setIf("cert_file", be.CertFile).
			setIf("key_file", be.KeyFile)
	}

	if o := s.OIDCDiscovery; o != nil {
		sb.block("oidc_discovery").
			set("listen", o.Listen).
			set("issuer", o.Issuer).
			set("cert_file", o.CertFile).
			set("key_file", o.KeyFile)
	}

	if ag := s.Agent; ag != nil {
		ab := body.block("agent")
		if parent := f.server(s.Parent); parent != nil {
			ab.set("server_address", addressValue(parent))
		} else if s.Upstream != nil && s.Upstream.SPIRE != nil {
			ab.set("server_address", s.Upstream.SPIRE.ServerAddress)
		}
		ab.set("spiffe_id", ag.SPIFFEID.String()).
			set("socket_path", ag.SocketPath).
			set("data_dir", ag.DataDir).
			set("server_selectors", nonNil(ag.ServerSelectors)).
			set("sync_interval", dur(ag.SyncInterval))
		nb := ab.block("node_attestor", ag.NodeAttestor.Kind)
		switch na := ag.NodeAttestor; na.Kind {
		case NodeAttestorJoinToken:
			nb.setIf("token", na.Token)
		case NodeAttestorX509PoP:
			nb.set("private_key_path", na.PrivateKeyPath).
				set("certificate_path", na.CertificatePath).
				setIf("intermediates_path", na.IntermediatesPath)
		case NodeAttestorAWSIID:
			nb.setIf("ec2_metadata_endpoint", na.EC2MetadataEndpoint)
		case NodeAttestorK8sPSAT:
			nb.set("cluster", na.Cluster).set("token_path", na.TokenPath)
		case NodeAttestorGCPIIT:
			nb.setIf("service_account", na.ServiceAccount).setIf("identity_token_host", na.IdentityTokenHost)
		case NodeAttestorAzureMSI:
			nb.setIf("resource_id", na.ResourceID).setIf("metadata_endpoint", na.MetadataEndpoint)
		}
		for _, wa := range ag.WorkloadAttestors {
			renderWorkloadAttestor(ab.block("workload_attestor", wa.Kind), wa)
		}
		if ag.SDS.configured() {
			ag.SDS.render(ab.block("sds"), true)
		}
	}

	for _, e := range s.Entries {
		eb := body.block("entry", e.Name)
		x509, jwt := e.X509SVIDTTL, e.JWTSVIDTTL
		if x509 == 0 {
			x509 = s.X509SVIDTTL
		}
		if jwt == 0 {
			jwt = s.JWTSVIDTTL
		}
		eb.set("spiffe_id", e.SPIFFEID.String()).
			set("parent_id", e.ParentID.String()).
			set("selectors", nonNil(e.Selectors)).
			set("x509_svid_ttl", dur(x509)).
			set("jwt_svid_ttl", dur(jwt)).
			set("dns_names", nonNil(e.DNSNames)).
			set("admin", e.Admin).
			set("downstream", e.Downstream).
			set("federates_with", nonNil(e.FederatesWith)).
			set("hint", e.Hint)
	}
	// The entries this server must hold so that each child server gets
	// its downstream SVID from its co-located agent.
	for _, c := range f.Children(s.Name) {
		if c.Agent == nil {
			continue
		}
		eb := body.block("entry", "downstream-"+c.Name)
		eb.set("spiffe_id", c.SPIFFEID.String()).
			set("parent_id", c.Agent.SPIFFEID.String()).
			set("selectors", nonNil(c.Agent.ServerSelectors)).
			set("x509_svid_ttl", dur(s.X509SVIDTTL)).
			set("jwt_svid_ttl", dur(s.JWTSVIDTTL)).
			set("dns_names", []string{}).
			set("admin", false).
			set("downstream", true).
			set("federates_with", []string{}).
			set("hint", "arbor downstream server "+c.Name)
	}

	for _, fed := range f.Federations {
		fb := body.block("federation", fed.TrustDomain.Name())
		fb.set("bundle_endpoint", fed.BundleEndpoint).set("profile", fed.Profile)
		if !fed.EndpointSPIFFEID.IsZero() {
			fb.set("endpoint_spiffe_id", fed.EndpointSPIFFEID.String())
		}
		fb.setIf("bootstrap_bundle", fed.BootstrapBundle)
		if fetcher := f.Fetcher(fed); fetcher != nil {
			fb.set("fetched_by", fetcher.Name)
		}
	}
	return &NodeConfig{Node: s.Node(), Source: f.Path, Body: body}, nil
}

// addressValue is how Render writes the addresses of s's tier: a string
// for one, a list for several (as the topology file may write them).
func addressValue(s *Server) any {
	if len(s.Addresses) > 1 {
		return s.Addresses
	}
	return s.Address
}

// SecretNotRendered is what Render writes in place of a secret it leaves
// out (aws_iid's secret_access_key): the rendered configuration says the
// file sets one, never what it is.
const SecretNotRendered = "(not rendered)"

// renderNodeAttestor writes a server's node_attestor block, every value
// resolved.
func renderNodeAttestor(b *Block, a NodeAttestor) {
	switch a.Kind {
	case NodeAttestorJoinToken:
		b.set("default_ttl", dur(a.JoinToken.DefaultTTL))
	case NodeAttestorX509PoP:
		b.set("ca_bundle_paths", a.X509PoP.CABundlePaths).setIf("agent_path_template", a.X509PoP.AgentPathTemplate)
	case NodeAttestorAWSIID:
		c := a.AWSIID
		b.setIf("access_key_id", c.AccessKeyID)
		if c.SecretAccessKey != "" {
			b.set("secret_access_key", SecretNotRendered)
		}
		b.setIf("assume_role", c.AssumeRole).
			set("partition", c.Partition).
			set("skip_block_device", c.SkipBlockDevice).
			set("disable_instance_profile_selectors", c.DisableInstanceProfileSelectors).
			set("account_ids_for_local_validation", nonNil(c.AccountIDsForLocalValidation)).
			setIf("agent_path_template", c.AgentPathTemplate).
			set("account_ids", nonNil(c.AccountIDs)).
			set("identity_certificate_paths", nonNil(c.IdentityCertificatePaths)).
			setIf("ec2_endpoint", c.EC2Endpoint).
			setIf("iam_endpoint", c.IAMEndpoint).
			setIf("sts_endpoint", c.STSEndpoint)
	case NodeAttestorK8sPSAT:
		for _, c := range a.K8sPSAT.Clusters {
			b.block("cluster", c.Name).
				set("service_account_allow_list", nonNil(c.ServiceAccountAllowList)).
				set("audience", nonNil(c.Audience)).
				setIf("kube_config_file", c.KubeConfigFile).
				set("allowed_node_label_keys", nonNil(c.AllowedNodeLabelKeys)).
				set("allowed_pod_label_keys", nonNil(c.AllowedPodLabelKeys))
		}
	case NodeAttestorGCPIIT:
		c := a.GCPIIT
		b.set("projectid_allow_list", nonNil(c.ProjectIDAllowList)).
			setIf("agent_path_template", c.AgentPathTemplate).
			set("use_instance_metadata", c.UseInstanceMetadata).
			set("allowed_label_keys", nonNil(c.AllowedLabelKeys)).
			set("allowed_metadata_keys", nonNil(c.AllowedMetadataKeys))
		if c.MaxMetadataValueSize != 0 {
			b.set("max_metadata_value_size", c.MaxMetadataValueSize)
		}
		b.setIf("service_account_file", c.ServiceAccountFile).
			setIf("keys_url", c.KeysURL).
			setIf("compute_endpoint", c.ComputeEndpoint)
	case NodeAttestorAzureMSI:
		c := a.AzureMSI
		b.setIf("agent_path_template", c.AgentPathTemplate).
			setIf("login_endpoint", c.LoginEndpoint).
			setIf("sts_endpoint", c.STSEndpoint).
			setIf("arm_endpoint", c.ARMEndpoint)
		for _, t := range c.Tenants {
			tb := b.block("tenant", t.ID).
				setIf("resource_id", t.ResourceID).
				set("subscription_ids", nonNil(t.SubscriptionIDs)).
				setIf("app_id", t.AppID)
			if t.AppSecret != "" {
				tb.set("app_secret", SecretNotRendered)
			}
		}
	}
}

func renderUpstream(b *Block, u *Upstream) {
	switch {
	case u.Disk != nil:
		b.set("cert_file_path", u.Disk.CertFilePath).set("key_file_path", u.Disk.KeyFilePath).setIf("bundle_file_path", u.Disk.BundleFilePath)
	case u.Vault != nil:
		v := u.Vault
		b.set("address", v.Address).set("pki_mount", v.PKIMount).setIf("namespace", v.Namespace).
			setIf("ca_cert_path", v.CACertPath).set("insecure_skip_verify", v.InsecureSkipVerify)
		a := b.block("auth", v.Auth.Method)
		switch v.Auth.Method {
		case VaultAuthToken:
			a.set("token", v.Auth.Token)
		case VaultAuthAppRole:
			a.set("mount", v.Auth.Mount).set("role_id", v.Auth.RoleID).set("secret_id", v.Auth.SecretID)
		case VaultAuthCert:
			a.set("mount", v.Auth.Mount).setIf("role_name", v.Auth.RoleName).set("client_cert_path", v.Auth.ClientCertPath).set("client_key_path", v.Auth.ClientKeyPath)
		case VaultAuthKubernetes:
			a.set("mount", v.Auth.Mount).set("role", v.Auth.Role).set("token_path", v.Auth.TokenPath)
		}
	case u.AWSPCA != nil:
		c := u.AWSPCA
		b.set("region", c.Region).set("certificate_authority_arn", c.CertificateAuthorityARN).
			set("ca_signing_template_arn", c.CASigningTemplateARN).setIf("signing_algorithm", c.SigningAlgorithm).
			setIf("assume_role_arn", c.AssumeRoleARN).setIf("endpoint", c.Endpoint).setIf("supplemental_bundle_path", c.SupplementalBundlePath)
	case u.SPIRE != nil:
		b.set("server_address", u.SPIRE.ServerAddress).set("workload_api_socket", u.SPIRE.WorkloadAPISocket)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// WriteHCL writes the configuration as HCL.
func (c *NodeConfig) WriteHCL(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Configuration of %q rendered by `arbor topology render` from %s.\n# Generated: edit the topology file instead.\n\n", c.Node, c.Source)
	writeHCLBody(&b, c.Body, "")
	_, err := w.Write(b.Bytes())
	return err
}

func writeHCLBody(b *bytes.Buffer, blk *Block, indent string) {
	width := 0
	for _, a := range blk.Attrs {
		width = max(width, len(a.Name))
	}
	for _, a := range blk.Attrs {
		fmt.Fprintf(b, "%s%-*s = %s\n", indent, width, a.Name, hclValueAt(a.Value, indent))
	}
	for i, c := range blk.Blocks {
		if i > 0 || len(blk.Attrs) > 0 {
			b.WriteString("\n")
		}
		b.WriteString(indent + c.Type)
		for _, l := range c.Labels {
			b.WriteString(" " + strconv.Quote(l))
		}
		if len(c.Attrs) == 0 && len(c.Blocks) == 0 {
			b.WriteString(" {}\n")
			continue
		}
		b.WriteString(" {\n")
		writeHCLBody(b, c, indent+"  ")
		b.WriteString(indent + "}\n")
	}
}

// hclValue writes a value as an HCL literal; "${" and "%{" are escaped so
// that a value is never read back as a template.
func hclValue(v any) string { return hclValueAt(v, "") }

// hclValueAt is hclValue for a value written at indent: the lines of an
// object are indented one step further.
func hclValueAt(v any, indent string) string {
	quote := func(s string) string {
		q := strconv.Quote(s)
		q = strings.ReplaceAll(q, "${", "$${")
		return strings.ReplaceAll(q, "%{", "%%{")
	}
	switch v := v.(type) {
	case Object:
		if len(v.Items) == 0 {
			return "{}"
		}
		keys := make([]string, len(v.Items))
		width := 0
		for i, it := range v.Items {
			keys[i] = it.Name
			if !v.Fields {
				keys[i] = quote(it.Name)
			}
			width = max(width, len(keys[i]))
		}
		var b strings.Builder
		b.WriteString("{\n")
		for i, it := range v.Items {
			fmt.Fprintf(&b, "%s  %-*s = %s\n", indent, width, keys[i], hclValueAt(it.Value, indent+"  "))
		}
		return b.String() + indent + "}"
	case string:
		return quote(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	default:
		return fmt.Sprint(v)
	}
}

// WriteJSON writes the configuration in HCL's JSON form: attributes are
// properties, a block is a property named by its type holding an object
// per label. Blocks of one type and label that repeat become arrays.
func (c *NodeConfig) WriteJSON(w io.Writer) error {
	var b bytes.Buffer
	writeJSONBody(&b, c.Body, "")
	b.WriteString("\n")
	_, err := w.Write(b.Bytes())
	return err
}

func writeJSONBody(b *bytes.Buffer, blk *Block, indent string) {
	in := indent + "  "
	var items []string
	for _, a := range blk.Attrs {
		v, _ := json.Marshal(a.Value)
		items = append(items, fmt.Sprintf("%s%s: %s", in, jsonString(a.Name), v))
	}
	// Group blocks by type, in order of first appearance.
	var types []string
	byType := map[string][]*Block{}
	for _, c := range blk.Blocks {
		if _, ok := byType[c.Type]; !ok {
			types = append(types, c.Type)
		}
		byType[c.Type] = append(byType[c.Type], c)
	}
	for _, t := range types {
		var sub bytes.Buffer
		writeJSONBlocks(&sub, byType[t], in)
		items = append(items, fmt.Sprintf("%s%s: %s", in, jsonString(t), sub.String()))
	}
	if len(items) == 0 {
		b.WriteString("{}")
		return
	}
	b.WriteString("{\n" + strings.Join(items, ",\n") + "\n" + indent + "}")
}

// writeJSONBlocks writes blocks of one type: nested objects keyed by
// label when labelled, a single object (or array) when not.
func writeJSONBlocks(b *bytes.Buffer, blocks []*Block, indent string) {
	if len(blocks[0].Labels) == 0 {
		if len(blocks) == 1 {
			writeJSONBody(b, blocks[0], indent)
			return
		}
		b.WriteString("[")
		for i, c := range blocks {
			if i > 0 {
				b.WriteString(", ")
			}
			writeJSONBody(b, c, indent)
		}
		b.WriteString("]")
		return
	}
	in := indent + "  "
	var items []string
	for _, c := range blocks {
		var sub bytes.Buffer
		rest := &Block{Type: c.Type, Labels: c.Labels[1:], Attrs: c.Attrs, Blocks: c.Blocks}
		if len(rest.Labels) > 0 {
			writeJSONBlocks(&sub, []*Block{rest}, in)
		} else {
			writeJSONBody(&sub, rest, in)
		}
		items = append(items, fmt.Sprintf("%s%s: %s", in, jsonString(c.Labels[0]), sub.String()))
	}
	b.WriteString("{\n" + strings.Join(items, ",\n") + "\n" + indent + "}")
}

func jsonString(s string) string {
	v, _ := json.Marshal(s)
	return string(v)
}

func renderWorkloadAttestor(b *Block, wa WorkloadAttestor) {
	switch wa.Kind {
	case WorkloadAttestorUnix:
		b.set("discover_workload_path", wa.Unix.DiscoverWorkloadPath)
	case WorkloadAttestorK8s:
		k := wa.K8s
		if k.KubeletReadOnlyPort != 0 {
			b.set("kubelet_read_only_port", k.KubeletReadOnlyPort)
		}
		if k.KubeletSecurePort != 0 {
			b.set("kubelet_secure_port", k.KubeletSecurePort)
		}
		b.setIf("kubelet_ca_path", k.KubeletCAPath).
			set("skip_kubelet_verification", k.SkipKubeletVerification).
			setIf("token_path", k.TokenPath).
			setIf("certificate_path", k.CertificatePath).
			setIf("private_key_path", k.PrivateKeyPath).
			set("use_anonymous_authentication", k.UseAnonymousAuthentication).
			setIf("node_name", k.NodeName).
			setIf("node_name_env", k.NodeNameEnv)
		if k.MaxPollAttempts != 0 {
			b.set("max_poll_attempts", k.MaxPollAttempts)
		}
		if k.PollRetryInterval != 0 {
			b.set("poll_retry_interval", dur(k.PollRetryInterval))
		}
		b.set("disable_container_selectors", k.DisableContainerSelectors)
	case WorkloadAttestorDocker:
		b.setIf("docker_socket_path", wa.Docker.SocketPath).
			setIf("docker_version", wa.Docker.APIVersion).
			set("env_keys", nonNil(wa.Docker.EnvKeys))
	}
}
