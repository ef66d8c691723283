package topology

import "github.com/hashicorp/hcl/v2"

// This file is the topology language: every block and attribute the parser
// accepts is declared here and nowhere else. Anything not listed is reported
// as a diagnostic at its line (there is deliberately no catch-all "remain"
// body). To grow the language, add the schema here, then its decoding in
// parse.go, its checks in validate.go and its reference in docs/topology.md.

// fileSchema is the top level of a topology file.
var fileSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "trust_domain", Required: true},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "defaults"},
		{Type: "server", LabelNames: []string{"name"}},
		{Type: "federation", LabelNames: []string{"trust_domain"}},
	},
}

// variableSchema is a variable "NAME" block.
var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "default"},
		{Name: "description"},
	},
}

// defaultsSchema is the defaults block: settings every server inherits.
var defaultsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "ca_ttl"},
		{Name: "x509_svid_ttl"},
		{Name: "jwt_svid_ttl"},
		{Name: "agent_svid_ttl"},
		{Name: "key_type"},
		{Name: "jwt_key_type"},
		{Name: "log_level"},
		{Name: "log_format"},
		{Name: "sync_interval"},
		{Name: "min_outage_budget"},
	},
}

// serverSchema is a server "NAME" block.
var serverSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "parent"},
		{Name: "host"},
		{Name: "listen"},
		{Name: "address"},
		{Name: "admin_socket"},
		{Name: "health_listen"},
		{Name: "state_dir"},
		{Name: "replicas"},
		{Name: "spiffe_id"},
		{Name: "ca_ttl"},
		{Name: "x509_svid_ttl"},
		{Name: "jwt_svid_ttl"},
		{Name: "agent_svid_ttl"},
		{Name: "key_type"},
		{Name: "jwt_key_type"},
		{Name: "ca_key_storage"},
		{Name: "log_level"},
		{Name: "log_format"},
		{Name: "jwt_issuer"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "datastore", LabelNames: []string{"kind"}},
		{Type: "upstream", LabelNames: []string{"kind"}},
		{Type: "node_attestor", LabelNames: []string{"kind"}},
		{Type: "agent"},
		{Type: "entry", LabelNames: []string{"name"}},
		{Type: "bundle_endpoint"},
		{Type: "oidc_discovery"},
	},
}

// oidcDiscoverySchema is a server's oidc_discovery block: the OIDC
// discovery provider relying parties use to verify JWT-SVIDs.
var oidcDiscoverySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "listen", Required: true},
		{Name: "issuer", Required: true},
		{Name: "cert_file", Required: true},
		{Name: "key_file", Required: true},
	},
}

// bundleEndpointSchema is a server's bundle_endpoint block: the SPIFFE
// bundle endpoint it serves for federated trust domains.
var bundleEndpointSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "listen", Required: true},
		{Name: "profile"},
		{Name: "refresh_hint"},
		{Name: "cert_file"},
		{Name: "key_file"},
	},
}

// datastoreSchemas is the body of datastore "KIND" per kind.
var datastoreSchemas = map[string]*hcl.BodySchema{
	DatastoreSQLite: {
		Attributes: []hcl.AttributeSchema{{Name: "path"}},
	},
	DatastorePostgres: {
		Attributes: []hcl.AttributeSchema{{Name: "dsn"}},
	},
}

// nodeAttestorSchemas is the body of node_attestor "KIND" per kind, on the
// server side (what the server accepts from agents).
var nodeAttestorSchemas = map[string]*hcl.BodySchema{
	NodeAttestorJoinToken: {
		Attributes: []hcl.AttributeSchema{{Name: "default_ttl"}},
	},
	NodeAttestorX509PoP: {
		Attributes: []hcl.AttributeSchema{
			{Name: "ca_bundle_paths", Required: true},
			{Name: "agent_path_template"},
		},
	},
	// The names are SPIRE's plugin_data, but for the last five, arbor's own.
	NodeAttestorAWSIID: {
		Attributes: []hcl.AttributeSchema{
			{Name: "access_key_id"},
			{Name: "secret_access_key"},
			{Name: "assume_role"},
			{Name: "partition"},
			{Name: "skip_block_device"},
			{Name: "disable_instance_profile_selectors"},
			{Name: "account_ids_for_local_validation"},
			{Name: "agent_path_template"},
			{Name: "account_ids"},
			{Name: "identity_certificate_paths"},
			{Name: "ec2_endpoint"},
			{Name: "iam_endpoint"},
			{Name: "sts_endpoint"},
		},
	},
	// SPIRE's clusters map, one cluster "NAME" block per key.
	NodeAttestorK8sPSAT: {
		Blocks: []hcl.BlockHeaderSchema{{Type: "cluster", LabelNames: []string{"name"}}},
	},
	// SPIRE's names, but for the last two, arbor's own.
	NodeAttestorGCPIIT: {
		Attributes: []hcl.AttributeSchema{
			{Name: "projectid_allow_list", Required: true},
			{Name: "agent_path_template"},
			{Name: "use_instance_metadata"},
			{Name: "allowed_label_keys"},
			{Name: "allowed_metadata_keys"},
			{Name: "max_metadata_value_size"},
			{Name: "service_account_file"},
			{Name: "keys_url"},
			{Name: "compute_endpoint"},
		},
	},
	// SPIRE's tenants map, one tenant "ID" block per key; the endpoints
	// are arbor's own.
	NodeAttestorAzureMSI: {
		Attributes: []hcl.AttributeSchema{
			{Name: "agent_path_template"},
			{Name: "login_endpoint"},
			{Name: "sts_endpoint"},
			{Name: "arm_endpoint"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "tenant", LabelNames: []string{"id"}}},
	},
}

// azureTenantSchema is a tenant "ID" block of azure_msi: SPIRE's names,
// and subscription_ids for more than one subscription.
var azureTenantSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "resource_id"},
		{Name: "subscription_id"},
		{Name: "subscription_ids"},
		{Name: "app_id"},
		{Name: "app_secret"},
	},
}

// awsIIDUnsupported are the settings of SPIRE's server aws_iid plugin that
// arbor's does not implement. They are not part of the language: the parser
// looks for them only to say so, as attributes or blocks.
var awsIIDUnsupported = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "verify_organization"},
		{Name: "validate_eks_cluster_membership"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "verify_organization"},
		{Type: "validate_eks_cluster_membership"},
	},
}

// k8sPSATClusterSchema is a k8s_psat attestor's cluster "NAME" block.
var k8sPSATClusterSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "service_account_allow_list", Required: true},
		{Name: "audience"},
		{Name: "kube_config_file"},
		{Name: "allowed_node_label_keys"},
		{Name: "allowed_pod_label_keys"},
	},
}

// upstreamSchemas is the body of upstream "KIND" per kind.
var upstreamSchemas = map[string]*hcl.BodySchema{
	UpstreamDisk: {
		Attributes: []hcl.AttributeSchema{
			{Name: "cert_file_path", Required: true},
			{Name: "key_file_path", Required: true},
			{Name: "bundle_file_path"},
		},
	},
	UpstreamVault: {
		Attributes: []hcl.AttributeSchema{
			{Name: "address", Required: true},
			{Name: "pki_mount"},
			{Name: "namespace"},
			{Name: "ca_cert_path"},
			{Name: "insecure_skip_verify"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "auth", LabelNames: []string{"method"}}},
	},
	UpstreamAWSPCA: {
		Attributes: []hcl.AttributeSchema{
			{Name: "region", Required: true},
			{Name: "certificate_authority_arn", Required: true},
			{Name: "ca_signing_template_arn"},
			{Name: "signing_algorithm"},
			{Name: "assume_role_arn"},
			{Name: "endpoint"},
			{Name: "supplemental_bundle_path"},
		},
	},
	UpstreamSPIRE: {
		Attributes: []hcl.AttributeSchema{
			{Name: "server_address", Required: true},
			{Name: "workload_api_socket"},
		},
	},
}

// vaultAuthSchemas is the body of a vault upstream's auth "METHOD" block.
var vaultAuthSchemas = map[string]*hcl.BodySchema{
	VaultAuthToken: {
		Attributes: []hcl.AttributeSchema{{Name: "token", Required: true}},
	},
	VaultAuthAppRole: {
		Attributes: []hcl.AttributeSchema{
			{Name: "mount"},
			{Name: "role_id", Required: true},
			{Name: "secret_id", Required: true},
		},
	},
	VaultAuthCert: {
		Attributes: []hcl.AttributeSchema{
			{Name: "mount"},
			{Name: "role_name"},
			{Name: "client_cert_path", Required: true},
			{Name: "client_key_path", Required: true},
		},
	},
	VaultAuthKubernetes: {
		Attributes: []hcl.AttributeSchema{
			{Name: "mount"},
			{Name: "role", Required: true},
			{Name: "token_path"},
		},
	},
}

// agentSchema is a server's agent block.
var agentSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "socket_path"},
		{Name: "data_dir"},
		{Name: "spiffe_id"},
		{Name: "server_selectors"},
		{Name: "sync_interval"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "node_attestor", LabelNames: []string{"kind"}},
		{Type: "workload_attestor", LabelNames: []string{"kind"}},
		{Type: "sds"},
	},
}

// sdsSchema is an agent's sds block: spire-agent's attribute names, and
// disabled, arbor's.
var sdsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "default_svid_name"},
		{Name: "default_bundle_name"},
		{Name: "default_all_bundles_name"},
		{Name: "disable_spiffe_cert_validation"},
		{Name: "disabled"},
	},
}

// workloadAttestorSchemas is the body of an agent's workload_attestor
// "KIND": SPIRE's plugin_data names, and docker's env_keys of arbor's.
// use_new_container_locator is accepted as SPIRE's only locator arbor has.
var workloadAttestorSchemas = map[string]*hcl.BodySchema{
	WorkloadAttestorUnix: {
		Attributes: []hcl.AttributeSchema{{Name: "discover_workload_path"}},
	},
	WorkloadAttestorK8s: {
		Attributes: []hcl.AttributeSchema{
			{Name: "kubelet_secure_port"},
			{Name: "kubelet_read_only_port"},
			{Name: "kubelet_ca_path"},
			{Name: "skip_kubelet_verification"},
			{Name: "token_path"},
			{Name: "certificate_path"},
			{Name: "private_key_path"},
			{Name: "use_anonymous_authentication"},
			{Name: "node_name"},
			{Name: "node_name_env"},
			{Name: "max_poll_attempts"},
			{Name: "poll_retry_interval"},
			{Name: "disable_container_selectors"},
			{Name: "use_new_container_locator"},
		},
	},
	WorkloadAttestorDocker: {
		Attributes: []hcl.AttributeSchema{
			{Name: "docker_socket_path"},
			{Name: "docker_version"},
			{Name: "env_keys"},
			{Name: "use_new_container_locator"},
		},
	},
}

// agentAttestorSchemas is the body of an agent's node_attestor "KIND".
var agentAttestorSchemas = map[string]*hcl.BodySchema{
	NodeAttestorJoinToken: {
		Attributes: []hcl.AttributeSchema{{Name: "token"}},
	},
	NodeAttestorX509PoP: {
		Attributes: []hcl.AttributeSchema{
			{Name: "private_key_path", Required: true},
			{Name: "certificate_path", Required: true},
			{Name: "intermediates_path"},
		},
	},
	NodeAttestorAWSIID: {
		Attributes: []hcl.AttributeSchema{{Name: "ec2_metadata_endpoint"}},
	},
	NodeAttestorK8sPSAT: {
		Attributes: []hcl.AttributeSchema{
			{Name: "cluster", Required: true},
			{Name: "token_path"},
		},
	},
	NodeAttestorGCPIIT: {
		Attributes: []hcl.AttributeSchema{{Name: "service_account"}, {Name: "identity_token_host"}},
	},
	// resource_id is SPIRE's; metadata_endpoint arbor's.
	NodeAttestorAzureMSI: {
		Attributes: []hcl.AttributeSchema{{Name: "resource_id"}, {Name: "metadata_endpoint"}},
	},
}

// entrySchema is an entry "NAME" block.
var entrySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "spiffe_id", Required: true},
		{Name: "parent_id", Required: true},
		{Name: "selectors", Required: true},
		{Name: "x509_svid_ttl"},
		{Name: "jwt_svid_ttl"},
		{Name: "dns_names"},
		{Name: "admin"},
		{Name: "downstream"},
		{Name: "federates_with"},
		{Name: "hint"},
	},
}

// federationSchema is a federation "TRUST_DOMAIN" block.
var federationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "bundle_endpoint", Required: true},
		{Name: "profile"},
		{Name: "endpoint_spiffe_id"},
		{Name: "bootstrap_bundle"},
		{Name: "fetched_by"},
	},
}

// ServerAttributes lists every attribute a server block accepts, its nested
// blocks' included, as dotted paths from the server block: "ca_ttl",
// "datastore.sqlite.path", "upstream.vault.auth.approle.role_id",
// "agent.sync_interval", "agent.node_attestor.x509pop.certificate_path",
// "node_attestor.k8s_psat.cluster.audience", "entry.spiffe_id". It is read from the schema above, so a tool or a test
// that must handle every attribute sees a new one as soon as the language
// accepts it.
func ServerAttributes() []string {
	var out []string
	add := func(prefix string, s *hcl.BodySchema) {
		for _, a := range s.Attributes {
			out = append(out, prefix+a.Name)
		}
	}
	addKinds := func(prefix string, m map[string]*hcl.BodySchema) {
		for _, k := range sortedKeys(m) {
			add(prefix+k+".", m[k])
		}
	}
	add("", serverSchema)
	addKinds("datastore.", datastoreSchemas)
	addKinds("node_attestor.", nodeAttestorSchemas)
	add("node_attestor."+NodeAttestorK8sPSAT+".cluster.", k8sPSATClusterSchema)
	add("node_attestor."+NodeAttestorAzureMSI+".tenant.", azureTenantSchema)
	addKinds("upstream.", upstreamSchemas)
	addKinds("upstream."+UpstreamVault+".auth.", vaultAuthSchemas)
	add("agent.", agentSchema)
	addKinds("agent.node_attestor.", agentAttestorSchemas)
	addKinds("agent.workload_attestor.", workloadAttestorSchemas)
	add("agent.sds.", sdsSchema)
	add("entry.", entrySchema)
	add("bundle_endpoint.", bundleEndpointSchema)
	add("oidc_discovery.", oidcDiscoverySchema)
	return out
}
