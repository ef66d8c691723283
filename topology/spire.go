package topology

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SPIREVersion is the SPIRE release whose configuration RenderSPIRE writes
// (attribute and plugin names as documented by that release).
const SPIREVersion = "v1.13.3"

// SPIREConfig is what real SPIRE processes need to take a server's place in
// the tree: a spire-server `server.conf` and, for a server that gets its CA
// from a parent (or from an upstream "spire" server), the `agent.conf` of
// the spire-agent running beside it and attested to that parent.
type SPIREConfig struct {
	// Node is the server's name; Source the topology file it came from.
	Node   string
	Source string
	// Server is the body of server.conf: a server block, plugins and
	// optionally health_checks.
	Server *Block
	// Agent is the body of agent.conf; nil when the server has no
	// co-located agent (a root without upstream "spire").
	Agent *Block
	// ServerNotes and AgentNotes are comment lines written at the top of
	// each file: what must be done outside the file (bootstrap bundles,
	// registration entries at the parent, tokens).
	ServerNotes []string
	AgentNotes  []string
}

// spireDuration formats d as a Go duration, which is what SPIRE's
// configuration parses ("720h", not "30d").
func spireDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// splitAddress splits host:port, giving an empty host as "0.0.0.0" (the
// unspecified address SPIRE's bind_address wants).
func splitAddress(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("topology: address %q: %v", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

func atoiPort(port string) (int, error) {
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("topology: port %q is not a TCP port", port)
	}
	return n, nil
}

// plugin adds `TYPE "NAME" { plugin_data { ... } }` to a plugins block and
// returns the plugin_data block.
func plugin(plugins *Block, typ, name string) *Block {
	return plugins.block(typ, name).block("plugin_data")
}

// RenderSPIRE renders the SPIRE configuration of the server named node:
// the server.conf of a spire-server that replaces it (same trust domain,
// listen address, TTLs, key types, datastore, node attestors, and its CA
// from the same place: the parent through UpstreamAuthority "spire", or
// the root's upstream), and the agent.conf of the co-located spire-agent
// when the server has one. Attribute names are SPIREVersion's.
func RenderSPIRE(f *File, node string) (*SPIREConfig, error) {
	s, err := f.Replica(node)
	if err != nil {
		return nil, err
	}
	cfg := &SPIREConfig{Node: s.Node(), Source: f.Path}

	bindHost, bindPort, err := splitAddress(s.Listen)
	if err != nil {
		return nil, err
	}
	port, err := atoiPort(bindPort)
	if err != nil {
		return nil, err
	}
	body := &Block{}
	sb := body.block("server")
	sb.set("trust_domain", f.TrustDomain.Name()).
		set("bind_address", bindHost).
		set("bind_port", port).
		set("socket_path", s.AdminSocket).
		set("data_dir", s.StateDir).
		set("ca_ttl", spireDuration(s.CATTL)).
		set("default_x509_svid_ttl", spireDuration(s.X509SVIDTTL)).
		set("default_jwt_svid_ttl", spireDuration(s.JWTSVIDTTL)).
		set("agent_ttl", spireDuration(s.AgentSVIDTTL)).
		set("ca_key_type", string(s.KeyType))
	if s.JWTKeyType != s.KeyType {
		sb.set("jwt_key_type", string(s.JWTKeyType))
	}
	sb.setIf("jwt_issuer", s.JWTIssuer).
		set("log_level", strings.ToUpper(s.LogLevel)).
		set("log_format", s.LogFormat)
	// federates_with goes only on the server that fetches (fetched_by): a
	// SPIRE server does not pass federated bundles to the servers below it.
	fetches := f.FederationsFetchedBy(s.Name)
	if len(fetches) > 0 || s.BundleEndpoint != nil {
		fed := sb.block("federation")
		if be := s.BundleEndpoint; be != nil {
			host, portStr, err := splitAddress(be.Listen)
			if err != nil {
				return nil, err
			}
			port, err := strconv.Atoi(portStr)
			if err != nil {
				return nil, fmt.Errorf("topology: bundle endpoint port %q: %v", portStr, err)
			}
			eb := fed.block("bundle_endpoint").
				set("address", host).
				set("port", port).
				set("refresh_hint", spireDuration(be.RefreshHint))
			if be.Profile == ProfileHTTPSWeb {
				// SPIRE polls the files (arbor checks them on every new
				// connection); a minute keeps a replaced certificate close.
				eb.block("profile", ProfileHTTPSWeb).block("serving_cert_file").
					set("cert_file_path", be.CertFile).
					set("key_file_path", be.KeyFile).
					set("file_sync_interval", "1m")
			}
		}
		for _, fd := range fetches {
			fw := fed.block("federates_with", fd.TrustDomain.Name())
			fw.set("bundle_endpoint_url", fd.BundleEndpoint)
			p := fw.block("bundle_endpoint_profile", fd.Profile)
			if fd.Profile == ProfileHTTPSSPIFFE {
				p.set("endpoint_spiffe_id", fd.EndpointSPIFFEID.String())
			}
		}
	}

	plugins := body.block("plugins")
	ds := plugin(plugins, "DataStore", "sql")
	switch s.Datastore.Kind {
	case DatastorePostgres:
		ds.set("database_type", "postgres").set("connection_string", s.Datastore.DSN)
	default:
		ds.set("database_type", "sqlite3").set("connection_string", s.Datastore.Path)
	}
	if s.CAKeyStorage == CAKeyStorageMemory {
		plugin(plugins, "KeyManager", "memory")
	} else {
		plugin(plugins, "KeyManager", "disk").set("keys_path", filepath.Join(s.StateDir, "keys.json"))
	}
	for _, a := range s.NodeAttestors {
		pd := plugin(plugins, "NodeAttestor", a.Kind)
		switch a.Kind {
		case NodeAttestorX509PoP:
			pd.set("ca_bundle_paths", nonNil(a.X509PoP.CABundlePaths)).setIf("agent_path_template", a.X509PoP.AgentPathTemplate)
		case NodeAttestorJoinToken:
			if a.JoinToken.DefaultTTL != DefaultJoinTokenTTL {
				cfg.ServerNotes = append(cfg.ServerNotes, fmt.Sprintf(
					"join tokens: SPIRE has no default token TTL setting; generate them with `spire-server token generate -ttl %d`",
					int(a.JoinToken.DefaultTTL/time.Second)))
			}
		case NodeAttestorAWSIID:
			cfg.ServerNotes = append(cfg.ServerNotes, renderSPIREAWSIID(pd, a.AWSIID)...)
		case NodeAttestorK8sPSAT:
			renderSPIREK8sPSAT(pd, a.K8sPSAT)
		case NodeAttestorGCPIIT:
			cfg.ServerNotes = append(cfg.ServerNotes, renderSPIREGCPIIT(pd, a.GCPIIT)...)
		case NodeAttestorAzureMSI:
			cfg.ServerNotes = append(cfg.ServerNotes, renderSPIREAzureMSI(pd, a.AzureMSI)...)
		}
	}

	parent := f.server(s.Parent)
	switch {
	case parent != nil:
		host, port, err := splitAddress(parent.Address)
		if err != nil {
			return nil, err
		}
		plugin(plugins, "UpstreamAuthority", UpstreamSPIRE).
			set("server_address", host).
			set("server_port", port).
			set("workload_api_socket", s.Agent.SocketPath)
		if n := oneAddressNote("UpstreamAuthority \"spire\"", parent); n != "" {
			cfg.ServerNotes = append(cfg.ServerNotes, n)
		}
		cfg.ServerNotes = append(cfg.ServerNotes,
			fmt.Sprintf("gets its CA from %s (%s) through the co-located agent of agent.conf, with the X509-SVID of this downstream entry at %s:", parent.Name, parent.Address, parent.Name),
			"  "+entryCreateCommand(s.SPIFFEID.String(), s.Agent.SPIFFEID.String(), serverSelectors(s.Agent), true))
	case s.Upstream != nil:
		renderSPIREUpstream(plugins, s)
	}
	if r := s.Replicas; r > 1 && len(s.Addresses) > 1 {
		cfg.ServerNotes = append(cfg.ServerNotes, fmt.Sprintf("run %d spire-server processes with this file (one per machine: they share bind_port), behind one TCP load balancer, since spire-agent dials one server address (arbor agents take the list %s); they share the datastore, each keeps its own CA",
			r, strings.Join(s.Addresses, ", ")))
	} else if r > 1 {
		cfg.ServerNotes = append(cfg.ServerNotes, fmt.Sprintf("run %d spire-server processes with this file, behind %s; they share the datastore, each keeps its own CA", r, s.Address))
	}

	// What this server must hold: the downstream entries of its children
	// and the declared entries. SPIRE keeps entries in its datastore, not
	// in server.conf, so they are listed as commands.
	var cmds []string
	for _, c := range f.Children(s.Name) {
		if c.Agent != nil {
			cmds = append(cmds, entryCreateCommand(c.SPIFFEID.String(), c.Agent.SPIFFEID.String(), serverSelectors(c.Agent), true))
		}
	}
	for _, e := range s.Entries {
		cmd := entryCreateCommand(e.SPIFFEID.String(), e.ParentID.String(), e.Selectors, e.Downstream)
		if e.X509SVIDTTL != 0 {
			cmd += fmt.Sprintf(" -x509SVIDTTL %d", int(e.X509SVIDTTL/time.Second))
		}
		if e.JWTSVIDTTL != 0 {
			cmd += fmt.Sprintf(" -jwtSVIDTTL %d", int(e.JWTSVIDTTL/time.Second))
		}
		for _, d := range e.DNSNames {
			cmd += " -dns " + d
		}
		for _, td := range e.FederatesWith {
			cmd += " -federatesWith " + td
		}
		if e.Admin {
			cmd += " -admin"
		}
		cmds = append(cmds, cmd)
	}
	// An arbor tier passes federated bundles down; a spire-server gets none
	// from its upstream, so its entries' foreign bundles must be fetched here.
	var notFetched []string
	for _, e := range s.Entries {
		for _, td := range e.FederatesWith {
			if !slices.Contains(notFetched, td) && !slices.ContainsFunc(fetches, func(fd Federation) bool { return fd.TrustDomain.Name() == td }) {
				notFetched = append(notFetched, td)
			}
		}
	}
	for _, td := range notFetched {
		by := "another server"
		if i := slices.IndexFunc(f.Federations, func(fd Federation) bool { return fd.TrustDomain.Name() == td }); i >= 0 {
			if fetcher := f.Fetcher(f.Federations[i]); fetcher != nil {
				by = fetcher.Name
			}
		}
		cfg.ServerNotes = append(cfg.ServerNotes, fmt.Sprintf(
			"entries here federate with %s, whose bundle %s fetches; spire-server receives no federated bundles from its upstream: set fetched_by = %q in that federation block, or keep it current with `spire-server bundle set -id spiffe://%s -path BUNDLE`",
			td, by, s.Name, td))
	}
	if len(cmds) > 0 {
		cfg.ServerNotes = append(cfg.ServerNotes, "registration entries this server must hold (spire-server entry create, -socketPath "+s.AdminSocket+"):")
		for _, c := range cmds {
			cfg.ServerNotes = append(cfg.ServerNotes, "  "+c)
		}
	}

	if s.HealthListen != "" {
		host, port, err := splitAddress(s.HealthListen)
		if err != nil {
			return nil, err
		}
		body.block("health_checks").
			set("listener_enabled", true).
			set("bind_address", host).
			set("bind_port", port)
	}
	cfg.Server = body

	if s.Agent != nil {
		if err := renderSPIREAgent(cfg, f, s); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// renderSPIREAWSIID writes the plugin_data of SPIRE's server aws_iid and
// returns the notes about what it leaves out: the secret access key, and
// arbor's own settings, which SPIRE does not have.
func renderSPIREAWSIID(pd *Block, c AWSIID) []string {
	pd.setIf("access_key_id", c.AccessKeyID).
		setIf("assume_role", c.AssumeRole).
		set("partition", c.Partition)
	if c.SkipBlockDevice {
		pd.set("skip_block_device", true)
	}
	if c.DisableInstanceProfileSelectors {
		pd.set("disable_instance_profile_selectors", true)
	}
	if len(c.AccountIDsForLocalValidation) > 0 {
		pd.set("account_ids_for_local_validation", c.AccountIDsForLocalValidation)
	}
	pd.setIf("agent_path_template", c.AgentPathTemplate)
	var notes []string
	if c.SecretAccessKey != "" {
		notes = append(notes, "aws_iid: secret_access_key is a secret and is not written here: start spire-server with AWS_SECRET_ACCESS_KEY set to it (SPIRE reads it when plugin_data has none)")
	}
	if len(c.AccountIDs) > 0 {
		notes = append(notes, fmt.Sprintf(
			"aws_iid: account_ids (%s) left out: SPIRE's aws_iid has no account allow-list, so spire-server accepts instances of any account whose document verifies; restrict it with assume_role (a role only your accounts have) or SPIRE's verify_organization",
			strings.Join(c.AccountIDs, ", ")))
	}
	var arborOnly []string
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"identity_certificate_paths", len(c.IdentityCertificatePaths) > 0},
		{"ec2_endpoint", c.EC2Endpoint != ""},
		{"iam_endpoint", c.IAMEndpoint != ""},
		{"sts_endpoint", c.STSEndpoint != ""},
	} {
		if o.set {
			arborOnly = append(arborOnly, o.name)
		}
	}
	if len(arborOnly) > 0 {
		notes = append(notes, fmt.Sprintf(
			"aws_iid: %s left out: arbor settings SPIRE's aws_iid does not have; spire-server verifies instance identity documents with AWS's certificates and calls AWS's own endpoints",
			strings.Join(arborOnly, ", ")))
	}
	return notes
}

// renderSPIREGCPIIT writes the plugin_data of SPIRE's server gcp_iit and
// returns the notes about arbor's own settings it leaves out.
func renderSPIREGCPIIT(pd *Block, c GCPIIT) []string {
	pd.set("projectid_allow_list", nonNil(c.ProjectIDAllowList)).
		setIf("agent_path_template", c.AgentPathTemplate)
	if c.UseInstanceMetadata {
		pd.set("use_instance_metadata", true)
	}
	if len(c.AllowedLabelKeys) > 0 {
		pd.set("allowed_label_keys", c.AllowedLabelKeys)
	}
	if len(c.AllowedMetadataKeys) > 0 {
		pd.set("allowed_metadata_keys", c.AllowedMetadataKeys)
	}
	if c.MaxMetadataValueSize != 0 {
		pd.set("max_metadata_value_size", c.MaxMetadataValueSize)
	}
	pd.setIf("service_account_file", c.ServiceAccountFile)
	var arborOnly []string
	if c.KeysURL != "" {
		arborOnly = append(arborOnly, "keys_url")
	}
	if c.ComputeEndpoint != "" {
		arborOnly = append(arborOnly, "compute_endpoint")
	}
	if len(arborOnly) > 0 {
		return []string{fmt.Sprintf("gcp_iit: %s left out: arbor settings SPIRE's gcp_iit does not have; spire-server verifies identity tokens with Google's keys and calls Google's Compute API",
			strings.Join(arborOnly, " and "))}
	}
	return nil
}

// renderSPIREAzureMSI writes the plugin_data of SPIRE's server azure_msi:
// the tenant blocks become its tenants map. SPIRE (v1.13.3) takes one
// subscription per tenant, only with app credentials (with the SDK's
// default ones it looks VMs up in the subscription of its own VM), and
// reads app_secret only from plugin_data, which a rendering never holds.
func renderSPIREAzureMSI(pd *Block, c AzureMSI) []string {
	var notes []string
	tenants := Object{}
	for _, t := range c.Tenants {
		fields := Object{Fields: true}
		if t.ResourceID != "" {
			fields.Items = append(fields.Items, Attr{"resource_id", t.ResourceID})
		}
		switch {
		case t.AppID == "":
			notes = append(notes, fmt.Sprintf("azure_msi: tenant %s: subscription %s left out: SPIRE takes a subscription_id only with app_id and app_secret; with the Azure SDK's default credentials spire-server looks VMs up in the subscription of its own VM",
				t.ID, strings.Join(t.SubscriptionIDs, ", ")))
		default:
			fields.Items = append(fields.Items, Attr{"subscription_id", t.SubscriptionIDs[0]}, Attr{"app_id", t.AppID})
			notes = append(notes, fmt.Sprintf("azure_msi: tenant %s: app_secret is a secret and is not written here: add app_secret to its entry in plugin_data before starting spire-server", t.ID))
			if len(t.SubscriptionIDs) > 1 {
				notes = append(notes, fmt.Sprintf("azure_msi: tenant %s: SPIRE takes one subscription_id per tenant; %s left out, so spire-server refuses the VMs of those subscriptions",
					t.ID, strings.Join(t.SubscriptionIDs[1:], ", ")))
			}
		}
		tenants.Items = append(tenants.Items, Attr{t.ID, fields})
	}
	pd.set("tenants", tenants).setIf("agent_path_template", c.AgentPathTemplate)
	var arborOnly []string
	for _, o := range []struct {
		name string
		set  bool
	}{{"login_endpoint", c.LoginEndpoint != ""}, {"sts_endpoint", c.STSEndpoint != ""}, {"arm_endpoint", c.ARMEndpoint != ""}} {
		if o.set {
			arborOnly = append(arborOnly, o.name)
		}
	}
	if len(arborOnly) > 0 {
		notes = append(notes, fmt.Sprintf("azure_msi: %s left out: arbor settings SPIRE's azure_msi does not have; spire-server uses Azure's public cloud endpoints",
			strings.Join(arborOnly, ", ")))
	}
	return notes
}

// renderSPIREK8sPSAT writes the plugin_data of SPIRE's server k8s_psat: the
// cluster blocks become its clusters map.
func renderSPIREK8sPSAT(pd *Block, k K8sPSAT) {
	clusters := Object{}
	for _, c := range k.Clusters {
		fields := Object{Fields: true, Items: []Attr{
			{"service_account_allow_list", nonNil(c.ServiceAccountAllowList)},
			{"audience", nonNil(c.Audience)},
		}}
		if c.KubeConfigFile != "" {
			fields.Items = append(fields.Items, Attr{"kube_config_file", c.KubeConfigFile})
		}
		if len(c.AllowedNodeLabelKeys) > 0 {
			fields.Items = append(fields.Items, Attr{"allowed_node_label_keys", c.AllowedNodeLabelKeys})
		}
		if len(c.AllowedPodLabelKeys) > 0 {
			fields.Items = append(fields.Items, Attr{"allowed_pod_label_keys", c.AllowedPodLabelKeys})
		}
		clusters.Items = append(clusters.Items, Attr{c.Name, fields})
	}
	pd.set("clusters", clusters)
}

// serverSelectors are the selectors of a downstream entry: the agent
// block's, else a placeholder for the uid the server process runs as (what
// `arbor topology apply` fills in).
func serverSelectors(a *Agent) []string {
	if len(a.ServerSelectors) > 0 {
		return a.ServerSelectors
	}
	return []string{"unix:uid:<uid of spire-server>"}
}

func entryCreateCommand(id, parentID string, selectors []string, downstream bool) string {
	cmd := fmt.Sprintf("spire-server entry create -spiffeID %s -parentID %s", id, parentID)
	for _, sel := range selectors {
		cmd += " -selector " + sel
	}
	if downstream {
		cmd += " -downstream"
	}
	return cmd
}

// renderSPIREUpstream writes a root's upstream block as the SPIRE
// UpstreamAuthority plugin of the same kind, with SPIRE's attribute names.
func renderSPIREUpstream(plugins *Block, s *Server) {
	u := s.Upstream
	pd := plugin(plugins, "UpstreamAuthority", u.Kind)
	switch {
	case u.Disk != nil:
		pd.set("cert_file_path", u.Disk.CertFilePath).set("key_file_path", u.Disk.KeyFilePath).setIf("bundle_file_path", u.Disk.BundleFilePath)
	case u.Vault != nil:
		v := u.Vault
		pd.set("vault_addr", v.Address).set("pki_mount_point", v.PKIMount).setIf("namespace", v.Namespace).
			setIf("ca_cert_path", v.CACertPath)
		if v.InsecureSkipVerify {
			pd.set("insecure_skip_verify", true)
		}
		switch a := v.Auth; a.Method {
		case VaultAuthToken:
			pd.block("token_auth").set("token", a.Token)
		case VaultAuthAppRole:
			pd.block("approle_auth").set("approle_auth_mount_point", a.Mount).set("approle_id", a.RoleID).set("approle_secret_id", a.SecretID)
		case VaultAuthCert:
			pd.block("cert_auth").set("cert_auth_mount_point", a.Mount).setIf("cert_auth_role_name", a.RoleName).
				set("client_cert_path", a.ClientCertPath).set("client_key_path", a.ClientKeyPath)
		case VaultAuthKubernetes:
			pd.block("k8s_auth").set("k8s_auth_mount_point", a.Mount).set("k8s_auth_role_name", a.Role).set("token_path", a.TokenPath)
		}
	case u.AWSPCA != nil:
		c := u.AWSPCA
		pd.set("region", c.Region).set("certificate_authority_arn", c.CertificateAuthorityARN).
			set("ca_signing_template_arn", c.CASigningTemplateARN).setIf("signing_algorithm", c.SigningAlgorithm).
			setIf("assume_role_arn", c.AssumeRoleARN).setIf("endpoint", c.Endpoint).setIf("supplemental_bundle_path", c.SupplementalBundlePath)
	case u.SPIRE != nil:
		host, port, err := net.SplitHostPort(u.SPIRE.ServerAddress)
		if err != nil {
			host, port = u.SPIRE.ServerAddress, ""
		}
		pd.set("server_address", host).setIf("server_port", port).set("workload_api_socket", u.SPIRE.WorkloadAPISocket)
	}
}

// renderSPIREAgent writes the agent.conf of the spire-agent beside s,
// attested to s's parent (or to the root's upstream "spire" server).
func renderSPIREAgent(cfg *SPIREConfig, f *File, s *Server) error {
	ag := s.Agent
	to, addr := s.Parent, ""
	if parent := f.server(s.Parent); parent != nil {
		addr = parent.Address
		if n := oneAddressNote("spire-agent", parent); n != "" {
			cfg.AgentNotes = append(cfg.AgentNotes, n)
		}
	} else if s.Upstream != nil && s.Upstream.SPIRE != nil {
		to, addr = "the upstream SPIRE server", s.Upstream.SPIRE.ServerAddress
	}
	host, portStr, err := splitAddress(addr)
	if err != nil {
		return err
	}
	port, err := atoiPort(portStr)
	if err != nil {
		return err
	}
	bundle := filepath.Join(ag.DataDir, "bootstrap-bundle.pem")
	body := &Block{}
	ab := body.block("agent")
	ab.set("trust_domain", f.TrustDomain.Name()).
		set("server_address", host).
		set("server_port", port).
		set("socket_path", ag.SocketPath).
		set("data_dir", ag.DataDir).
		set("trust_bundle_path", bundle).
		set("log_level", strings.ToUpper(s.LogLevel)).
		set("log_format", s.LogFormat)
	if ag.NodeAttestor.Kind == NodeAttestorJoinToken {
		ab.setIf("join_token", ag.NodeAttestor.Token)
	}
	// SPIRE's sync interval is experimental: setting it makes the agent
	// warn at start, so it is only written when it differs from SPIRE's 5s.
	if ag.SyncInterval != DefaultSyncInterval {
		ab.block("experimental").set("sync_interval", spireDuration(ag.SyncInterval))
	}
	renderSPIRESDS(cfg, ab, ag.SDS)
	plugins := body.block("plugins")
	pd := plugin(plugins, "NodeAttestor", ag.NodeAttestor.Kind)
	switch na := ag.NodeAttestor; na.Kind {
	case NodeAttestorX509PoP:
		pd.set("private_key_path", na.PrivateKeyPath).
			set("certificate_path", na.CertificatePath).
			setIf("intermediates_path", na.IntermediatesPath)
	case NodeAttestorAWSIID:
		pd.setIf("ec2_metadata_endpoint", na.EC2MetadataEndpoint)
	case NodeAttestorK8sPSAT:
		pd.set("cluster", na.Cluster).set("token_path", na.TokenPath)
	case NodeAttestorGCPIIT:
		pd.setIf("service_account", na.ServiceAccount).setIf("identity_token_host", na.IdentityTokenHost)
	case NodeAttestorAzureMSI:
		pd.setIf("resource_id", na.ResourceID)
		if na.MetadataEndpoint != "" {
			cfg.AgentNotes = append(cfg.AgentNotes, "azure_msi: metadata_endpoint left out: SPIRE's agent always asks http://169.254.169.254")
		}
	}
	plugin(plugins, "KeyManager", "disk").set("directory", ag.DataDir)
	unixPD := plugin(plugins, "WorkloadAttestor", WorkloadAttestorUnix)
	for _, wa := range ag.WorkloadAttestors {
		switch wa.Kind {
		case WorkloadAttestorUnix:
			if wa.Unix.DiscoverWorkloadPath {
				unixPD.set("discover_workload_path", true)
			}
		case WorkloadAttestorK8s:
			k := wa.K8s
			pd := plugin(plugins, "WorkloadAttestor", WorkloadAttestorK8s)
			if k.KubeletReadOnlyPort != 0 {
				pd.set("kubelet_read_only_port", k.KubeletReadOnlyPort)
			}
			if k.KubeletSecurePort != 0 {
				pd.set("kubelet_secure_port", k.KubeletSecurePort)
			}
			pd.setIf("kubelet_ca_path", k.KubeletCAPath)
			if k.SkipKubeletVerification {
				pd.set("skip_kubelet_verification", true)
			}
			pd.setIf("token_path", k.TokenPath).setIf("certificate_path", k.CertificatePath).setIf("private_key_path", k.PrivateKeyPath)
			if k.UseAnonymousAuthentication {
				pd.set("use_anonymous_authentication", true)
			}
			pd.setIf("node_name", k.NodeName).setIf("node_name_env", k.NodeNameEnv)
			if k.MaxPollAttempts != 0 {
				pd.set("max_poll_attempts", k.MaxPollAttempts)
			}
			if k.PollRetryInterval != 0 {
				pd.set("poll_retry_interval", spireDuration(k.PollRetryInterval))
			}
			if k.DisableContainerSelectors {
				pd.set("disable_container_selectors", true)
			}
			pd.set("use_new_container_locator", true)
		case WorkloadAttestorDocker:
			pd := plugin(plugins, "WorkloadAttestor", WorkloadAttestorDocker)
			pd.setIf("docker_socket_path", dockerSocketURL(wa.Docker.SocketPath)).setIf("docker_version", wa.Docker.APIVersion)
			pd.set("use_new_container_locator", true)
			cfg.AgentNotes = append(cfg.AgentNotes, "docker: spire-agent turns every environment variable of a container into a docker:env selector (secrets included); arbor only those of env_keys")
		}
	}
	cfg.Agent = body

	cfg.AgentNotes = append(cfg.AgentNotes,
		fmt.Sprintf("the agent beside %s, attested to %s (%s); it serves %s its downstream SVID on %s", s.Name, to, addr, s.Name, ag.SocketPath),
		fmt.Sprintf("before the first start, write the trust bundle of %s to %s", to, bundle),
		fmt.Sprintf("(`arbor bundle show` or `spire-server bundle show` there); %s maps this agent to %s", to, ag.SPIFFEID))
	switch na := ag.NodeAttestor; {
	case na.Kind == NodeAttestorJoinToken && na.Token == "":
		cfg.AgentNotes = append(cfg.AgentNotes, fmt.Sprintf(
			"join token: create one at %s with `spire-server token generate -spiffeID %s` and start with -joinToken TOKEN", to, ag.SPIFFEID))
	case na.Kind == NodeAttestorAWSIID || na.Kind == NodeAttestorGCPIIT || na.Kind == NodeAttestorAzureMSI:
		what := map[string]string{NodeAttestorAWSIID: "an instance", NodeAttestorGCPIIT: "an instance", NodeAttestorAzureMSI: "a VM"}[na.Kind]
		cfg.AgentNotes = append(cfg.AgentNotes, fmt.Sprintf(
			"%s: %s attests once (trust on first use): if this agent's SVID expires (%s unreachable for longer than its agent_ttl), %s refuses the agent until it is evicted there (`spire-server agent evict`)", na.Kind, what, to, to))
	case na.Kind == NodeAttestorK8sPSAT:
		mount := fmt.Sprintf("k8s_psat: mount the pod's projected service account token at %s (a serviceAccountToken volume", na.TokenPath)
		if parent := f.server(s.Parent); parent != nil {
			if accepted, ok := parent.NodeAttestor(NodeAttestorK8sPSAT); ok {
				if c, ok := accepted.K8sPSAT.Cluster(na.Cluster); ok && len(c.Audience) > 0 {
					mount += fmt.Sprintf(" with audience %q", c.Audience[0])
				}
			}
		}
		cfg.AgentNotes = append(cfg.AgentNotes, mount+")")
	}
	return nil
}

// WriteServerConf writes server.conf.
func (c *SPIREConfig) WriteServerConf(w io.Writer) error {
	return c.write(w, "spire-server", c.Server, c.ServerNotes)
}

// WriteAgentConf writes agent.conf; it fails when the server has no
// co-located agent.
func (c *SPIREConfig) WriteAgentConf(w io.Writer) error {
	if c.Agent == nil {
		return fmt.Errorf("topology: server %q has no co-located agent (no parent, no upstream \"spire\")", c.Node)
	}
	return c.write(w, "spire-agent", c.Agent, c.AgentNotes)
}

func (c *SPIREConfig) write(w io.Writer, program string, body *Block, notes []string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s %s for %q, rendered by `arbor topology render --format spire` from %s.\n", program, SPIREVersion, c.Node, c.Source)
	b.WriteString("# Generated: edit the topology file instead.\n")
	if len(notes) > 0 {
		b.WriteString("#\n")
		for _, n := range notes {
			b.WriteString("# " + n + "\n")
		}
	}
	b.WriteString("\n")
	writeHCLBody(&b, body, "")
	_, err := w.Write(b.Bytes())
	return err
}

// dockerSocketURL is docker_socket_path as SPIRE takes it: a unix:// URL.
func dockerSocketURL(path string) string {
	if path == "" {
		return ""
	}
	return "unix://" + path
}

// oneAddressNote says, when the tier of parent has several addresses, that
// what (spire-agent, SPIRE's UpstreamAuthority "spire") dials one and was
// given the first; "" when the tier has one address.
func oneAddressNote(what string, parent *Server) string {
	if len(parent.Addresses) <= 1 {
		return ""
	}
	return fmt.Sprintf("%s takes one server address; %s is reached at %s, so this file names the first: put a TCP load balancer (or one DNS name with a record per server) in front of them and write its address instead",
		what, parent.Name, strings.Join(parent.Addresses, ", "))
}
