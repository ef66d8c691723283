// Package tier is the one translation from a topology file to the settings
// of the processes that run it: ServerConfig for `arbor server --topology
// FILE --node NAME`, AgentConfig for the co-located agent of a server block
// (`arbor agent run --topology FILE --node NAME`) and WorkloadAgentConfig for
// an agent attached to a server for its workloads (`--attach NAME`). `arbor
// up` starts its children with those flags, so every process of a topology,
// started by hand or by the launcher, gets its settings from here.
//
// The translation is pure: it reads the parsed file and returns plain
// configuration values, so a test can check that every attribute the
// language accepts reaches a field. Server.Open then builds what needs I/O
// (the CA source's client).
package tier

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/agent/workloadattestor/docker"
	"github.com/arborid/arbor/agent/workloadattestor/k8s"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/nodeattest/awsiid"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/tier/attestcfg"
	"github.com/arborid/arbor/topology"
	"github.com/arborid/arbor/upstream/awspca"
	"github.com/arborid/arbor/upstream/disk"
	"github.com/arborid/arbor/upstream/vault"
)

// Server is what one server block runs with.
type Server struct {
	// Config is the server's configuration; its CA source is left nil,
	// Open sets it from Upstream.
	Config server.Config
	// LogLevel and LogFormat configure the process's logger.
	LogLevel, LogFormat string
	// Upstream says where the tier's CA comes from; the zero value is a
	// self-signed root.
	Upstream Upstream
	// Attestors are the node attestors whose server halves need files or
	// API clients to build; Open adds them to Config.NodeAttestors.
	Attestors Attestors
}

// Attestors holds the settings of the node attestors Open builds: at most
// one of each kind, nil when the server block has none.
type Attestors struct {
	AWSIID   *AWSIID
	K8sPSAT  *k8spsat.Config
	GCPIIT   *gcpiit.Config
	AzureMSI *azuremsi.Config
}

// AWSIID is a server's aws_iid attestor: its configuration but for the
// signing certificates, which Open reads from IdentityCertificatePaths
// (empty: the AWS certificates arbor ships).
type AWSIID struct {
	Config                   awsiid.Config
	IdentityCertificatePaths []string
}

// Upstream is the CA source of a tier: at most one field is set. Parent is
// the nesting link of a downstream tier (and of a root with upstream
// "spire"); the others are a root's external PKI.
type Upstream struct {
	Parent *downstream.Config
	Disk   *disk.Config
	Vault  *vault.Config
	AWSPCA *awspca.Config
}

// ServerConfig translates the server block named node of f: NAME for the
// block (its replica 1), NAME/K for its replica K with the ports and paths
// topology.Server.Replica derives. A replica K ≥ 2 needs a PostgreSQL
// datastore: on SQLite it would be a second tier with its own database.
func ServerConfig(f *topology.File, node string) (Server, error) {
	s, err := f.Replica(node)
	if err != nil {
		return Server{}, err
	}
	if s.ReplicaNumber > 1 && s.Datastore.Kind != topology.DatastorePostgres {
		return Server{}, fmt.Errorf("tier: server %q: replica %s needs a PostgreSQL datastore shared by every replica, but the block's datastore is %s; "+
			"set datastore \"postgres\" { dsn = ... } in server %[1]q", s.Name, s.Node(), s.Datastore.Kind)
	}
	keyType, err := ca.ParseKeyType(string(s.KeyType))
	if err != nil {
		return Server{}, fmt.Errorf("tier: server %q: key_type: %w", s.Name, err)
	}
	jwtKeyType, err := ca.ParseKeyType(string(s.JWTKeyType))
	if err != nil {
		return Server{}, fmt.Errorf("tier: server %q: jwt_key_type: %w", s.Name, err)
	}
	cfg := server.Config{
		Name:           s.Node(),
		TrustDomain:    f.TrustDomain,
		ListenAddr:     s.Listen,
		AdminSocket:    s.AdminSocket,
		HealthAddr:     s.HealthListen,
		StateDir:       s.StateDir,
		Datastore:      s.Datastore.Kind,
		SQLitePath:     s.Datastore.Path,
		PostgresDSN:    s.Datastore.DSN,
		CAKeyType:      keyType,
		JWTKeyType:     jwtKeyType,
		CATTL:          s.CATTL,
		X509SVIDTTL:    s.X509SVIDTTL,
		JWTSVIDTTL:     s.JWTSVIDTTL,
		AgentSVIDTTL:   s.AgentSVIDTTL,
		CAKeysInMemory: s.CAKeyStorage == topology.CAKeyStorageMemory,
		JWTIssuer:      s.JWTIssuer,
	}
	var attestors Attestors
	for _, a := range s.NodeAttestors {
		switch a.Kind {
		case topology.NodeAttestorJoinToken:
			cfg.JoinToken = true
			cfg.DefaultJoinTokenTTL = a.JoinToken.DefaultTTL
		case topology.NodeAttestorX509PoP:
			cfg.X509PoP = &server.X509PoPConfig{CABundlePaths: a.X509PoP.CABundlePaths, AgentPathTemplate: a.X509PoP.AgentPathTemplate}
		case topology.NodeAttestorAWSIID:
			c := a.AWSIID
			attestors.AWSIID = &AWSIID{
				Config: awsiid.Config{
					AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
					AssumeRole: c.AssumeRole, Partition: c.Partition,
					SkipBlockDevice: c.SkipBlockDevice, DisableInstanceProfileSelectors: c.DisableInstanceProfileSelectors,
					LocalValidAccountIDs: c.AccountIDsForLocalValidation, AccountIDs: c.AccountIDs,
					AgentPathTemplate: c.AgentPathTemplate,
					EC2Endpoint:       c.EC2Endpoint, IAMEndpoint: c.IAMEndpoint, STSEndpoint: c.STSEndpoint,
				},
				IdentityCertificatePaths: c.IdentityCertificatePaths,
			}
		case topology.NodeAttestorK8sPSAT:
			attestors.K8sPSAT = &k8spsat.Config{Clusters: attestcfg.K8sPSATClusters(a.K8sPSAT)}
		case topology.NodeAttestorGCPIIT:
			c := a.GCPIIT
			attestors.GCPIIT = &gcpiit.Config{
				ProjectIDAllowList: c.ProjectIDAllowList, AgentPathTemplate: c.AgentPathTemplate,
				UseInstanceMetadata: c.UseInstanceMetadata, AllowedLabelKeys: c.AllowedLabelKeys,
				AllowedMetadataKeys: c.AllowedMetadataKeys, MaxMetadataValueSize: c.MaxMetadataValueSize,
				ServiceAccountFile: c.ServiceAccountFile, KeysURL: c.KeysURL, ComputeEndpoint: c.ComputeEndpoint,
			}
		case topology.NodeAttestorAzureMSI:
			c := a.AzureMSI
			cfg := &azuremsi.Config{Tenants: map[string]azuremsi.TenantConfig{}, AgentPathTemplate: c.AgentPathTemplate,
				LoginEndpoint: c.LoginEndpoint, STSEndpoint: c.STSEndpoint, ARMEndpoint: c.ARMEndpoint}
			for _, t := range c.Tenants {
				cfg.Tenants[t.ID] = azuremsi.TenantConfig{ResourceID: t.ResourceID, SubscriptionIDs: t.SubscriptionIDs, AppID: t.AppID, AppSecret: t.AppSecret}
			}
			attestors.AzureMSI = cfg
		default:
			return Server{}, fmt.Errorf("tier: server %q: unknown node attestor kind %q", s.Name, a.Kind)
		}
	}
	// A federation goes to the server that fetches its bundle (fetched_by,
	// the root by default); the tiers below it receive the bundle through
	// their parent.
	for _, fed := range f.FederationsFetchedBy(s.Name) {
		cfg.Federations = append(cfg.Federations, server.FederationConfig{
			TrustDomain: fed.TrustDomain, BundleEndpointURL: fed.BundleEndpoint, Profile: fed.Profile,
			EndpointID: fed.EndpointSPIFFEID, BootstrapBundle: fed.BootstrapBundle,
		})
	}
	if o := s.OIDCDiscovery; o != nil {
		cfg.OIDCDiscovery = &server.OIDCDiscoveryConfig{ListenAddr: o.Listen, Issuer: o.Issuer, CertFile: o.CertFile, KeyFile: o.KeyFile}
	}
	if be := s.BundleEndpoint; be != nil {
		cfg.BundleEndpoint = &server.BundleEndpointConfig{
			ListenAddr: be.Listen, Profile: be.Profile, RefreshHint: be.RefreshHint,
			CertFile: be.CertFile, KeyFile: be.KeyFile,
		}
	}
	up, err := upstreamOf(f, s)
	if err != nil {
		return Server{}, err
	}
	return Server{Config: cfg, LogLevel: s.LogLevel, LogFormat: s.LogFormat, Upstream: up, Attestors: attestors}, nil
}

// upstreamOf is where s's CA comes from.
func upstreamOf(f *topology.File, s *topology.Server) (Upstream, error) {
	nest := func(addrs []string, socket string) (Upstream, error) {
		abs, err := filepath.Abs(socket)
		if err != nil {
			return Upstream{}, fmt.Errorf("tier: server %q: agent socket: %w", s.Name, err)
		}
		return Upstream{Parent: &downstream.Config{TrustDomain: f.TrustDomain, ParentAddresses: addrs, WorkloadAPIAddr: "unix://" + abs}}, nil
	}
	u := s.Upstream
	switch {
	case s.Parent != "":
		parent, err := f.Server(s.Parent)
		if err != nil {
			return Upstream{}, err
		}
		if s.Agent == nil {
			return Upstream{}, fmt.Errorf("tier: server %q has a parent but no agent block", s.Name)
		}
		return nest(slices.Clone(parent.Addresses), s.Agent.SocketPath)
	case u == nil:
		return Upstream{}, nil
	case u.SPIRE != nil:
		return nest([]string{u.SPIRE.ServerAddress}, u.SPIRE.WorkloadAPISocket)
	case u.Disk != nil:
		return Upstream{Disk: &disk.Config{
			TrustDomain: f.TrustDomain, CertFile: u.Disk.CertFilePath, KeyFile: u.Disk.KeyFilePath,
			BundleFile: u.Disk.BundleFilePath,
		}}, nil
	case u.Vault != nil:
		v := u.Vault
		cfg := &vault.Config{
			TrustDomain: f.TrustDomain, Address: v.Address, Namespace: v.Namespace, PKIMount: v.PKIMount,
			CACertFile: v.CACertPath, InsecureSkipVerify: v.InsecureSkipVerify,
		}
		switch a := v.Auth; a.Method {
		case topology.VaultAuthToken:
			cfg.Token = a.Token
		case topology.VaultAuthAppRole:
			cfg.AppRole = &vault.AppRole{Mount: a.Mount, RoleID: a.RoleID, SecretID: a.SecretID}
		case topology.VaultAuthCert:
			cfg.Cert = &vault.CertAuth{Mount: a.Mount, Name: a.RoleName, CertFile: a.ClientCertPath, KeyFile: a.ClientKeyPath}
		case topology.VaultAuthKubernetes:
			cfg.Kubernetes = &vault.Kubernetes{Mount: a.Mount, Role: a.Role, TokenFile: a.TokenPath}
		default:
			return Upstream{}, fmt.Errorf("tier: server %q: unknown Vault auth method %q", s.Name, a.Method)
		}
		return Upstream{Vault: cfg}, nil
	case u.AWSPCA != nil:
		c := u.AWSPCA
		return Upstream{AWSPCA: &awspca.Config{
			TrustDomain: f.TrustDomain, Region: c.Region, CertificateAuthorityARN: c.CertificateAuthorityARN,
			TemplateARN: c.CASigningTemplateARN, SigningAlgorithm: c.SigningAlgorithm, AssumeRoleARN: c.AssumeRoleARN,
			Endpoint: c.Endpoint, SupplementalBundleFile: c.SupplementalBundlePath,
		}}, nil
	}
	return Upstream{}, fmt.Errorf("tier: server %q: unknown upstream kind %q", s.Name, u.Kind)
}

// AgentConfig translates the agent block of the server block named node:
// the agent beside that server, attested to its parent (or to its upstream
// "spire" server), serving the server its downstream SVID. The bootstrap
// bundle, a join token not written in the file, workload attestors and the
// logger are the caller's: they belong to one start of one process.
func AgentConfig(f *topology.File, node string) (agent.Config, error) {
	s, err := f.Replica(node)
	if err != nil {
		return agent.Config{}, err
	}
	ag := s.Agent
	if ag == nil {
		return agent.Config{}, fmt.Errorf("tier: server %q has no co-located agent (no parent, no upstream \"spire\"); "+
			"to run an agent for workloads of %[1]q, attach one to it", s.Name)
	}
	var addrs []string
	switch {
	case s.Parent != "":
		parent, err := f.Server(s.Parent)
		if err != nil {
			return agent.Config{}, err
		}
		addrs = slices.Clone(parent.Addresses)
	case s.Upstream != nil && s.Upstream.SPIRE != nil:
		addrs = []string{s.Upstream.SPIRE.ServerAddress}
	default:
		return agent.Config{}, fmt.Errorf("tier: server %q has an agent block but nothing to attest to", s.Name)
	}
	cfg := agent.Config{
		TrustDomain:     f.TrustDomain,
		ServerAddresses: addrs,
		DataDir:         ag.DataDir,
		SocketPath:      ag.SocketPath,
		SyncInterval:    ag.SyncInterval,
		SDS: agent.SDSConfig{
			Disabled:                    ag.SDS.Disabled,
			DefaultSVIDName:             ag.SDS.DefaultSVIDName,
			DefaultBundleName:           ag.SDS.DefaultBundleName,
			DefaultAllBundlesName:       ag.SDS.DefaultAllBundlesName,
			DisableSPIFFECertValidation: ag.SDS.DisableSPIFFECertValidation,
		},
	}
	switch a := ag.NodeAttestor; a.Kind {
	case topology.NodeAttestorJoinToken:
		cfg.JoinToken = a.Token
	case topology.NodeAttestorX509PoP:
		cfg.X509PoP = &agent.X509PoPConfig{CertPath: a.CertificatePath, KeyPath: a.PrivateKeyPath, IntermediatesPath: a.IntermediatesPath}
	case topology.NodeAttestorAWSIID:
		cfg.NodeAttestor = awsiid.NewAgentAttestor(awsiid.AgentConfig{EC2MetadataEndpoint: a.EC2MetadataEndpoint})
	case topology.NodeAttestorK8sPSAT:
		cfg.NodeAttestor = k8spsat.NewAgentAttestor(k8spsat.AgentConfig{Cluster: a.Cluster, TokenPath: a.TokenPath})
	case topology.NodeAttestorGCPIIT:
		cfg.NodeAttestor = gcpiit.NewAgentAttestor(gcpiit.AgentConfig{ServiceAccount: a.ServiceAccount, IdentityTokenHost: a.IdentityTokenHost})
	case topology.NodeAttestorAzureMSI:
		cfg.NodeAttestor = azuremsi.NewAgentAttestor(azuremsi.AgentConfig{ResourceID: a.ResourceID, MetadataEndpoint: a.MetadataEndpoint})
	default:
		return agent.Config{}, fmt.Errorf("tier: server %q: agent: unknown node attestor kind %q", s.Name, a.Kind)
	}
	return cfg, nil
}

// WorkloadAgentConfig is an agent attached to the server block named node,
// for workloads of that tier: it connects to the tier's addresses (every
// replica, or the load balancer in front of them) and syncs as the
// defaults block says. Its data directory defaults to
// .arbor/<file-stem>/agent-NAME next to the file (topology.StateRoot); its
// socket and attestation are the caller's.
func WorkloadAgentConfig(f *topology.File, node string) (agent.Config, error) {
	s, err := f.Server(node)
	if err != nil {
		return agent.Config{}, err
	}
	cfg := agent.Config{
		TrustDomain:     f.TrustDomain,
		ServerAddresses: slices.Clone(s.Addresses),
		DataDir:         filepath.Join(topology.StateRoot(f.Path), "agent-"+s.Name),
		SyncInterval:    f.Defaults.SyncInterval,
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = topology.DefaultSyncInterval
	}
	return cfg, nil
}

// WorkloadAttestors are the settings of the workload attestors of a
// server's co-located agent: unix always, k8s and docker when the agent
// block has their workload_attestor blocks. The caller builds them (they
// read credentials and open sockets) for one start of the agent.
type WorkloadAttestors struct {
	Unix   unix.Config
	K8s    *k8s.Config
	Docker *docker.Config
}

// WorkloadAttestorsOf translates the workload_attestor blocks of the agent
// block of the server block named node. A server without an agent block
// gets unix with its defaults.
func WorkloadAttestorsOf(f *topology.File, node string) (WorkloadAttestors, error) {
	s, err := f.Replica(node)
	if err != nil {
		return WorkloadAttestors{}, err
	}
	var out WorkloadAttestors
	if s.Agent == nil {
		return out, nil
	}
	for _, wa := range s.Agent.WorkloadAttestors {
		switch wa.Kind {
		case topology.WorkloadAttestorUnix:
			out.Unix.DiscoverWorkloadPath = wa.Unix.DiscoverWorkloadPath
		case topology.WorkloadAttestorK8s:
			k := wa.K8s
			out.K8s = &k8s.Config{
				KubeletSecurePort: k.KubeletSecurePort, KubeletReadOnlyPort: k.KubeletReadOnlyPort,
				KubeletCAPath: k.KubeletCAPath, SkipKubeletVerification: k.SkipKubeletVerification,
				TokenPath: k.TokenPath, CertificatePath: k.CertificatePath, PrivateKeyPath: k.PrivateKeyPath,
				UseAnonymousAuthentication: k.UseAnonymousAuthentication, NodeName: k.NodeName, NodeNameEnv: k.NodeNameEnv,
				MaxPollAttempts: k.MaxPollAttempts, PollRetryInterval: k.PollRetryInterval,
				DisableContainerSelectors: k.DisableContainerSelectors,
			}
		case topology.WorkloadAttestorDocker:
			out.Docker = &docker.Config{SocketPath: wa.Docker.SocketPath, APIVersion: wa.Docker.APIVersion, EnvKeys: wa.Docker.EnvKeys}
		default:
			return WorkloadAttestors{}, fmt.Errorf("tier: server %q: agent: unknown workload attestor kind %q", s.Name, wa.Kind)
		}
	}
	return out, nil
}
