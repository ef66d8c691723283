package topology

import (
	"errors"
	"fmt"
	"github.com/arborid/arbor/internal/defaults"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/zclconf/go-cty/cty"
)

// ErrUnknownServer is returned (wrapped) by File.Server when no server block
// has the requested name.
var ErrUnknownServer = errors.New("topology: unknown server")

// Built-in defaults, used when neither the server block nor the defaults
// block sets a value. The TTLs are SPIRE's defaults.
const (
	DefaultListen       = "127.0.0.1:8081"
	DefaultHealthListen = "127.0.0.1:8080"
	DefaultCATTL        = defaults.CATTL
	DefaultX509SVIDTTL  = defaults.X509SVIDTTL
	DefaultJWTSVIDTTL   = defaults.JWTSVIDTTL
	DefaultKeyType      = KeyTypeECP256
	DefaultCAKeyStorage = CAKeyStorageDisk
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
	// DefaultJoinTokenTTL is how long a generated join token stays valid when
	// the request does not say (SPIRE's `token generate` default).
	DefaultJoinTokenTTL = defaults.JoinTokenTTL
	// DefaultStateDirName is the folder, next to the topology file, that
	// holds the state root of each topology file in that folder
	// (.arbor/<file-stem>, see StateRoot).
	DefaultStateDirName = ".arbor"
	// DefaultSyncInterval is how often an agent syncs entries and bundles
	// with its server.
	DefaultSyncInterval = defaults.SyncInterval
	// DefaultMinOutageBudget is the shortest outage budget (how long a tier
	// keeps issuing with its parent down, at worst) validation accepts
	// without a warning.
	DefaultMinOutageBudget = 4 * time.Hour
	// DefaultReplicas is the number of server processes of one block.
	DefaultReplicas = 1
	// LocalHost is the Host of servers whose address names no remote machine
	// (loopback, unspecified or "localhost"): they run on this machine.
	LocalHost = "local"
	// DefaultVarEnvPrefix prefixes the environment variables that set
	// topology variables: ARBOR_VAR_region sets var.region.
	DefaultVarEnvPrefix = "ARBOR_VAR_"
)

// KeyType names a signing key algorithm as written in the topology file.
type KeyType string

// The key types a server accepts for its CA and JWT signing keys.
const (
	KeyTypeECP256  KeyType = "ec-p256"
	KeyTypeECP384  KeyType = "ec-p384"
	KeyTypeRSA2048 KeyType = "rsa-2048"
	KeyTypeRSA4096 KeyType = "rsa-4096"
)

// KeyTypes lists the valid key types in the order the documentation shows them.
var keyTypes = []string{string(KeyTypeECP256), string(KeyTypeECP384), string(KeyTypeRSA2048), string(KeyTypeRSA4096)}

// CA key storage kinds.
const (
	// CAKeyStorageDisk keeps CA and JWT signing keys in the server's state
	// directory so that a restart keeps the current authorities.
	CAKeyStorageDisk = "disk"
	// CAKeyStorageMemory keeps keys only in memory: every restart mints new
	// authorities (fine for demos and tests).
	CAKeyStorageMemory = "memory"
)

// Datastore kinds.
const (
	DatastoreSQLite   = "sqlite"
	DatastorePostgres = "postgres"
)

// Node attestor kinds.
const (
	NodeAttestorJoinToken = "join_token"
	NodeAttestorX509PoP   = "x509pop"
	NodeAttestorAWSIID    = "aws_iid"
	NodeAttestorK8sPSAT   = "k8s_psat"
	NodeAttestorGCPIIT    = "gcp_iit"
	NodeAttestorAzureMSI  = "azure_msi"
)

// Upstream authority kinds (root servers only).
const (
	UpstreamDisk   = "disk"
	UpstreamVault  = "vault"
	UpstreamAWSPCA = "aws_pca"
	UpstreamSPIRE  = "spire"
)

// Federation bundle endpoint profiles.
const (
	ProfileHTTPSWeb    = "https_web"
	ProfileHTTPSSPIFFE = "https_spiffe"
)

// File is a parsed topology file. Every value is resolved: defaults are
// applied, relative paths are joined to the directory holding the file, and
// expressions (env, file) are evaluated.
type File struct {
	// Path is the file name given to ParseFile or Parse.
	Path string
	// TrustDomain is the one trust domain every server of the file serves.
	TrustDomain spiffeid.TrustDomain
	// Defaults holds what the defaults block set; zero fields were not set.
	Defaults Defaults
	// Servers are the server blocks in file order.
	Servers []*Server
	// Variables are the variable blocks in file order, with their values.
	Variables []Variable
	// Federations are the federation blocks in file order.
	Federations []Federation
}

// StateRoot is the folder under which the servers and agents of the
// topology file at path keep their state unless the file says otherwise:
// .arbor/<file-stem> next to the file, the stem being the file name without
// its .hcl or .json extension (.arbor/quickstart for quickstart.hcl). Files
// side by side thus never share a state directory, an admin socket or the
// control socket of arbor up, even when their servers have the same names.
func StateRoot(path string) string {
	stem := filepath.Base(path)
	stem = strings.TrimSuffix(stem, ".json")
	stem = strings.TrimSuffix(stem, ".hcl")
	return filepath.Join(filepath.Dir(path), DefaultStateDirName, stem)
}

// Variable is one variable "NAME" block and the value the file was parsed
// with: a value given to ParseWith, else the ARBOR_VAR_NAME environment
// variable, else the default.
type Variable struct {
	Name        string
	Description string
	// Value is the value as written by HCL (a string, number, bool or list).
	Value cty.Value
	Range hcl.Range
}

// Server returns the server block with the given name. The error wraps
// ErrUnknownServer and lists the names the file declares.
func (f *File) Server(name string) (*Server, error) {
	names := make([]string, 0, len(f.Servers))
	for _, s := range f.Servers {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	known := "it declares no servers"
	if len(names) > 0 {
		known = "known servers: " + strings.Join(names, ", ")
	}
	return nil, fmt.Errorf("%w %q in %s (%s)", ErrUnknownServer, name, f.Path, known)
}

// Defaults is the defaults block: values every server inherits unless its own
// block sets them. A zero field means the defaults block did not set it.
type Defaults struct {
	CATTL       time.Duration
	X509SVIDTTL time.Duration
	JWTSVIDTTL  time.Duration
	KeyType     KeyType
	JWTKeyType  KeyType
	LogLevel    string
	LogFormat   string
	// AgentSVIDTTL is the lifetime of the SVIDs servers issue to agents.
	AgentSVIDTTL time.Duration
	// SyncInterval is how often agents sync with their server.
	SyncInterval time.Duration
	// MinOutageBudget is the shortest outage budget accepted without a
	// warning; zero means DefaultMinOutageBudget.
	MinOutageBudget time.Duration
	// Range is the defaults block's header, or the zero Range when the file
	// has no defaults block.
	Range hcl.Range
}

// Server is one server block with every default applied.
type Server struct {
	// Name is the block label: server "NAME" { ... }.
	Name string
	// Parent names the server this one obtains its intermediate CA from; ""
	// for a root server.
	Parent string
	// Range is the block header (server "NAME" {), for diagnostics.
	Range hcl.Range

	// Listen is the TCP address of the agent/server gRPC API (TLS).
	// Default DefaultListen.
	Listen string
	// Addresses are how agents and child servers reach the tier: written
	// as address = "host:port" (one load balancer, or a DNS name with
	// several records) or address = ["host:port", ...] (several servers
	// of the tier, tried in turn). Default the listen address of every
	// replica (Listen alone when replicas = 1).
	Addresses []string
	// Address is Addresses[0], for callers that dial one address.
	Address string
	// AdminSocket is the Unix socket of the admin API. Default
	// StateDir/admin.sock.
	AdminSocket string
	// HealthListen is the TCP address of the HTTP health endpoints; "" means
	// disabled (written as "" or "off" in the file). Default DefaultHealthListen.
	HealthListen string
	// StateDir holds the server's keys, SQLite database and admin socket.
	// Default StateRoot(file)/NAME: .arbor/<file-stem>/NAME next to the
	// topology file. A relative path in the file is relative to the topology
	// file's directory.
	StateDir string

	CATTL       time.Duration
	X509SVIDTTL time.Duration
	JWTSVIDTTL  time.Duration
	// KeyType is the CA key type. Default DefaultKeyType.
	KeyType KeyType
	// JWTKeyType is the JWT signing key type. Default KeyType (as in SPIRE).
	JWTKeyType KeyType
	// CAKeyStorage is CAKeyStorageDisk (default) or CAKeyStorageMemory.
	CAKeyStorage string

	Datastore Datastore
	// NodeAttestors in file order; when the block declares none, a single
	// join_token attestor.
	NodeAttestors []NodeAttestor

	// LogLevel is one of debug, info, warn, error. LogFormat is text or json.
	LogLevel  string
	LogFormat string
	// JWTIssuer is the iss claim of JWT-SVIDs; "" means none.
	JWTIssuer string

	// Host names the machine the server runs on; servers with the same Host
	// must not share listen ports or paths. Default: the host of Address
	// when it names a remote machine, else LocalHost.
	Host string
	// Replicas is the number of processes running this block (HA: they
	// share a PostgreSQL datastore, each keeps its own CA). Default 1.
	Replicas int
	// ReplicaNumber is which of the Replicas processes this is: 0 or 1 for
	// the block as parsed (replica 1), K for the copy Replica(K) returns.
	ReplicaNumber int
	// SPIFFEID is the ID the server holds as a workload of its co-located
	// agent (the downstream entry its parent registers). Default
	// spiffe://<trust domain>/arbor/server/<name>.
	SPIFFEID spiffeid.ID
	// AgentSVIDTTL is the lifetime of SVIDs this server issues to agents.
	// Default the defaults block's, else X509SVIDTTL (as in SPIRE).
	AgentSVIDTTL time.Duration
	// Upstream is the root's external signing authority; nil means a
	// self-signed root (or, for a downstream server, the parent).
	Upstream *Upstream
	// Agent is how the co-located agent attests to the parent: set for
	// every server with a parent (defaulted when the block is absent) and
	// for a root with upstream "spire"; nil otherwise.
	Agent *Agent
	// Entries are the entry blocks in file order.
	Entries []Entry
	// BundleEndpoint is the SPIFFE bundle endpoint the server serves, or nil.
	BundleEndpoint *BundleEndpoint
	// OIDCDiscovery is the OIDC discovery provider the server serves, or nil.
	OIDCDiscovery *OIDCDiscovery

	// caTTLRange and x509TTLRange are where the effective ca_ttl and
	// x509_svid_ttl were written; nil for the built-in default.
	caTTLRange, x509TTLRange *hcl.Range
	// bodyRange is the whole block, to tell which diagnostics concern it.
	bodyRange hcl.Range
	// agentDefaulted is set when Agent was not written but implied.
	agentDefaulted bool

	// attrs records where each attribute of the block was written, so that
	// later validation can point at it.
	attrs map[string]hcl.Range
	// spans are the whole attributes and nested blocks of the block by name
	// (a block type for blocks), so that validation can tell which of them
	// hold errors and skip only the checks that depend on those.
	spans map[string][]hcl.Range
	// invalidEntries are the entry blocks left out of Entries for an error
	// (a SPIFFE ID that does not parse); their other attributes are still
	// checked.
	invalidEntries []Entry
}

// AttrRange returns where the named attribute was written in the server
// block (for example "ca_ttl"), or the block header when it was not.
func (s *Server) AttrRange(name string) hcl.Range {
	if r, ok := s.attrs[name]; ok {
		return r
	}
	return s.Range
}

// NodeAttestor returns the configured attestor of the given kind.
func (s *Server) NodeAttestor(kind string) (NodeAttestor, bool) {
	i := slices.IndexFunc(s.NodeAttestors, func(a NodeAttestor) bool { return a.Kind == kind })
	if i < 0 {
		return NodeAttestor{}, false
	}
	return s.NodeAttestors[i], true
}

// Datastore says where a server keeps its state.
type Datastore struct {
	// Kind is DatastoreSQLite (default) or DatastorePostgres.
	Kind string
	// Path is the SQLite database file. Default StateDir/datastore.sqlite3;
	// relative paths are relative to the topology file's directory.
	Path string
	// DSN is the PostgreSQL connection string (required for postgres).
	DSN string
}

// NodeAttestor is one node_attestor block of a server: a way agents may
// prove themselves to it. Only the field of its Kind is set.
type NodeAttestor struct {
	// Kind is NodeAttestorJoinToken, NodeAttestorX509PoP,
	// NodeAttestorAWSIID, NodeAttestorK8sPSAT, NodeAttestorGCPIIT or
	// NodeAttestorAzureMSI.
	Kind string
	// JoinToken is set when Kind is NodeAttestorJoinToken.
	JoinToken JoinToken
	// X509PoP is set when Kind is NodeAttestorX509PoP.
	X509PoP X509PoP
	// AWSIID is set when Kind is NodeAttestorAWSIID.
	AWSIID AWSIID
	// K8sPSAT is set when Kind is NodeAttestorK8sPSAT.
	K8sPSAT K8sPSAT
	// GCPIIT is set when Kind is NodeAttestorGCPIIT.
	GCPIIT GCPIIT
	// AzureMSI is set when Kind is NodeAttestorAzureMSI.
	AzureMSI AzureMSI
}

// JoinToken configures the join_token node attestor.
type JoinToken struct {
	// DefaultTTL is the lifetime of a token generated without an explicit
	// TTL. Default DefaultJoinTokenTTL.
	DefaultTTL time.Duration
}

// X509PoP configures the x509pop node attestor: agents prove possession of
// a private key whose certificate chains to one of the CA bundles.
type X509PoP struct {
	// CABundlePaths are PEM files of CA certificates agent certificates must
	// chain to. Relative paths are relative to the topology file's directory.
	CABundlePaths []string
	// AgentPathTemplate is a text/template for the agent ID path; "" means
	// the attestor's default (x509pop/<fingerprint>).
	AgentPathTemplate string
}

// DefaultAWSPartition is the AWS partition of an aws_iid attestor that
// names none (SPIRE's default).
const DefaultAWSPartition = "aws"

// AWSIID configures the aws_iid node attestor: an agent on EC2 sends the
// instance identity document AWS signed for its instance, and the server
// checks the signature and asks the EC2 API about the instance. An
// instance attests once (trust on first use) until its agent is evicted.
// The fields named after SPIRE's plugin_data (in parentheses) mean what
// they mean in SPIRE v1.13.3's server aws_iid plugin; the last two are
// arbor's own.
type AWSIID struct {
	// AccessKeyID and SecretAccessKey (access_key_id, secret_access_key)
	// are static AWS credentials for the server's AWS calls, both or
	// neither; empty means the SDK's default chain (environment, shared
	// files, instance role). SecretAccessKey is a secret: Render and
	// RenderSPIRE never write it.
	AccessKeyID     string
	SecretAccessKey string
	// AssumeRole (assume_role) is an IAM role name, not an ARN: for each
	// instance the server assumes arn:<Partition>:iam::<account>:role/<name>
	// in the instance's own account. "" means none.
	AssumeRole string
	// Partition (partition) is "aws", "aws-cn" or "aws-us-gov". Default
	// DefaultAWSPartition.
	Partition string
	// SkipBlockDevice (skip_block_device) turns off the check that the
	// instance's root volume was not swapped after launch.
	SkipBlockDevice bool
	// DisableInstanceProfileSelectors (disable_instance_profile_selectors)
	// skips the iam:GetInstanceProfile call, and with it the iamrole
	// selectors.
	DisableInstanceProfileSelectors bool
	// AccountIDsForLocalValidation (account_ids_for_local_validation) are
	// 12-digit AWS account IDs whose instances skip the block device check.
	AccountIDsForLocalValidation []string
	// AgentPathTemplate (agent_path_template) is a text/template for the
	// agent ID path; "" means the attestor's default,
	// aws_iid/<account>/<region>/<instance>.
	AgentPathTemplate string
	// IdentityCertificatePaths (arbor's identity_certificate_paths) are PEM
	// files of the certificates that verify instance identity signatures,
	// in place of the AWS certificates arbor ships, for every region
	// (private regions, tests). Empty means AWS's. Relative paths are
	// relative to the topology file's directory.
	IdentityCertificatePaths []string
	// AccountIDs (arbor's account_ids), when not empty, are the only
	// 12-digit AWS accounts whose instances may attest. Empty means any
	// account whose instance identity document verifies, as SPIRE without
	// verify_organization.
	AccountIDs []string
	// EC2Endpoint, IAMEndpoint and STSEndpoint (arbor's ec2_endpoint,
	// iam_endpoint, sts_endpoint) replace the URLs of the EC2, IAM and STS
	// APIs (VPC endpoints, private regions, local stand-ins); "" means
	// AWS's endpoint for the instance's region.
	EC2Endpoint string
	IAMEndpoint string
	STSEndpoint string
}

// GCPIIT configures the gcp_iit node attestor: an agent on a Compute
// Engine instance sends the identity token Google's metadata server issued
// for it, and the server checks Google's signature and the project. An
// instance attests once (trust on first use) until its agent is evicted.
// The names in parentheses are SPIRE's plugin_data; the last two are
// arbor's own.
type GCPIIT struct {
	// ProjectIDAllowList (projectid_allow_list): the projects whose
	// instances may attest; at least one.
	ProjectIDAllowList []string
	// AgentPathTemplate (agent_path_template); "" means the attestor's
	// default, gcp_iit/<project>/<instance id>.
	AgentPathTemplate string
	// UseInstanceMetadata (use_instance_metadata) reads the instance from
	// the Compute API for the tag, sa, label and metadata selectors.
	UseInstanceMetadata bool
	// AllowedLabelKeys and AllowedMetadataKeys (allowed_label_keys,
	// allowed_metadata_keys) name the labels and metadata items that
	// become selectors.
	AllowedLabelKeys    []string
	AllowedMetadataKeys []string
	// MaxMetadataValueSize (max_metadata_value_size), in bytes; 0 means
	// the attestor's default (128).
	MaxMetadataValueSize int
	// ServiceAccountFile (service_account_file): a service account key
	// for the Compute API; "" means Application Default Credentials. A
	// relative path is relative to the topology file's directory.
	ServiceAccountFile string
	// KeysURL (arbor's keys_url) replaces the URL of Google's token
	// signing keys; ComputeEndpoint (arbor's compute_endpoint) the
	// Compute API's base URL. "" means Google's.
	KeysURL         string
	ComputeEndpoint string
}

// AzureMSI configures the azure_msi node attestor: an agent on an Azure VM
// sends a managed identity token the instance metadata service issued, and
// the server checks Entra ID's signature, the tenant and the audience, and
// looks the VM up in Resource Manager. A VM attests once (trust on first
// use) until its agent is evicted. The names in parentheses are SPIRE's
// plugin_data; the endpoints are arbor's own.
type AzureMSI struct {
	// Tenants are the tenant "ID" blocks in file order (SPIRE's tenants
	// map); at least one, IDs unique.
	Tenants []AzureTenant
	// AgentPathTemplate (agent_path_template); "" means the attestor's
	// default, azure_msi/<tenant>/<principal id>.
	AgentPathTemplate string
	// LoginEndpoint, STSEndpoint and ARMEndpoint (arbor's login_endpoint,
	// sts_endpoint, arm_endpoint) replace Entra ID's login URL, the v1
	// token issuer's base and Resource Manager's URL ("" means Azure's
	// public cloud).
	LoginEndpoint, STSEndpoint, ARMEndpoint string
}

// AzureTenant is one tenant "ID" block of an azure_msi attestor.
type AzureTenant struct {
	// ID is the block label: the tenant's ID, a lowercase GUID.
	ID string
	// ResourceID (resource_id) is the audience its tokens must be for;
	// "" means the attestor's default, https://management.azure.com/.
	ResourceID string
	// SubscriptionIDs (SPIRE's subscription_id, and arbor's
	// subscription_ids for more than one): the subscriptions whose VMs may
	// attest; at least one.
	SubscriptionIDs []string
	// AppID and AppSecret (app_id, app_secret): an application's
	// credentials for Resource Manager, both or neither (neither: the
	// Azure SDK's default chain). AppSecret is a secret: Render and
	// RenderSPIRE never write it.
	AppID, AppSecret string
	// Range is the block header.
	Range hcl.Range
}

// DefaultK8sPSATAudience is the audience a projected service account token
// must be for when a k8s_psat cluster sets none (SPIRE's default).
const DefaultK8sPSATAudience = "spire-server"

// DefaultK8sPSATTokenPath is where an agent reads its projected service
// account token when its k8s_psat attestor does not say (SPIRE's agent
// default).
const DefaultK8sPSATTokenPath = "/var/run/secrets/tokens/spire-agent"

// K8sPSAT configures the k8s_psat node attestor: an agent in a Kubernetes
// pod sends the projected service account token of its pod, and the server
// has the cluster's API server review it (TokenReview) and looks up the pod
// and its node. The agent attests again with a fresh token whenever it
// needs to.
type K8sPSAT struct {
	// Clusters are the cluster blocks in file order (SPIRE's clusters map);
	// at least one, names unique.
	Clusters []K8sPSATCluster
}

// Cluster returns the cluster named name.
func (k K8sPSAT) Cluster(name string) (K8sPSATCluster, bool) {
	i := slices.IndexFunc(k.Clusters, func(c K8sPSATCluster) bool { return c.Name == name })
	if i < 0 {
		return K8sPSATCluster{}, false
	}
	return k.Clusters[i], true
}

// ClusterNames returns the names of the clusters in file order.
func (k K8sPSAT) ClusterNames() []string {
	names := make([]string, len(k.Clusters))
	for i, c := range k.Clusters {
		names[i] = c.Name
	}
	return names
}

// K8sPSATCluster is one cluster "NAME" block of a k8s_psat attestor: a
// Kubernetes cluster whose agents the server accepts. The names in
// parentheses are SPIRE's.
type K8sPSATCluster struct {
	// Name is the block label, what agents send as their cluster; a SPIFFE
	// ID path segment, since it is one in the agent ID.
	Name string
	// ServiceAccountAllowList (service_account_allow_list) holds the
	// service accounts agents may run as, each "namespace:name"; at least
	// one.
	ServiceAccountAllowList []string
	// Audience (audience) lists the audiences the token review asks for.
	// Default [DefaultK8sPSATAudience]; an empty list lets the API server
	// check its own audiences.
	Audience []string
	// KubeConfigFile (kube_config_file) is the kubeconfig to reach the
	// cluster's API server with; "" means the server runs in the cluster
	// and uses its pod's service account. A relative path is relative to
	// the topology file's directory.
	KubeConfigFile string
	// AllowedNodeLabelKeys and AllowedPodLabelKeys
	// (allowed_node_label_keys, allowed_pod_label_keys) name the node and
	// pod labels that become selectors.
	AllowedNodeLabelKeys []string
	AllowedPodLabelKeys  []string
	// Range is the block header.
	Range hcl.Range
}

// Upstream is an upstream "KIND" block: where a root server's CA comes from
// instead of being self-signed. Exactly one of the kind fields is set.
type Upstream struct {
	// Kind is UpstreamDisk, UpstreamVault, UpstreamAWSPCA or UpstreamSPIRE.
	Kind   string
	Disk   *DiskUpstream
	Vault  *VaultUpstream
	AWSPCA *AWSPCAUpstream
	SPIRE  *SPIREUpstream
	Range  hcl.Range
}

// DiskUpstream signs the root's CA with a CA certificate and key on disk.
type DiskUpstream struct {
	// CertFilePath and KeyFilePath are PEM files (required).
	CertFilePath string
	KeyFilePath  string
	// BundleFilePath holds extra upstream roots; "" means the certificate
	// of CertFilePath is the root.
	BundleFilePath string
}

// VaultUpstream signs the root's CA with Vault's PKI secrets engine
// (pki/root/sign-intermediate).
type VaultUpstream struct {
	// Address is Vault's URL (required).
	Address string
	// PKIMount is the PKI secrets engine's mount path. Default "pki".
	PKIMount string
	// Namespace is the Vault Enterprise namespace; "" means none.
	Namespace string
	// CACertPath verifies Vault's TLS certificate; "" means system roots.
	CACertPath         string
	InsecureSkipVerify bool
	// Auth is how arbor logs in (exactly one auth block).
	Auth VaultAuth
}

// Vault auth methods.
const (
	VaultAuthToken      = "token"
	VaultAuthAppRole    = "approle"
	VaultAuthCert       = "cert"
	VaultAuthKubernetes = "kubernetes"
)

// VaultAuth is the auth "METHOD" block of a vault upstream. Fields not used
// by Method are empty.
type VaultAuth struct {
	// Method is VaultAuthToken, VaultAuthAppRole, VaultAuthCert or
	// VaultAuthKubernetes.
	Method string
	// Mount is the auth method's mount path. Default the method name.
	Mount string
	// Token (token).
	Token string
	// RoleID and SecretID (approle).
	RoleID   string
	SecretID string
	// RoleName, ClientCertPath, ClientKeyPath (cert; RoleName optional).
	RoleName       string
	ClientCertPath string
	ClientKeyPath  string
	// Role and TokenPath (kubernetes). TokenPath defaults to the service
	// account token path.
	Role      string
	TokenPath string
}

// DefaultKubernetesTokenPath is where a pod's service account token lives.
const DefaultKubernetesTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// DefaultPCATemplateARN is the ACM PCA template the root's CA is issued
// with. The root's CA signs the intermediates of every tier below it, so
// path length 0 (SPIRE's usual choice for a flat deployment) would make
// every downstream CA invalid; validation checks the tree fits in 3.
const DefaultPCATemplateARN = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen3/V1"

// AWSPCAUpstream signs the root's CA with AWS Private CA.
type AWSPCAUpstream struct {
	// Region and CertificateAuthorityARN are required.
	Region                  string
	CertificateAuthorityARN string
	// CASigningTemplateARN. Default DefaultPCATemplateARN.
	CASigningTemplateARN string
	// SigningAlgorithm is the ACM PCA algorithm name. Default "": chosen
	// from the private CA's own key (SHA256WITHECDSA for P-256,
	// SHA384WITHECDSA for P-384, SHA256WITHRSA for RSA), as AWS requires it
	// to match the issuing CA, not the tier's key.
	SigningAlgorithm string
	// AssumeRoleARN is assumed before calling ACM PCA; "" means none.
	AssumeRoleARN string
	// Endpoint overrides the service endpoint URL; "" means AWS's.
	Endpoint string
	// SupplementalBundlePath holds extra roots to add to the bundle.
	SupplementalBundlePath string
}

// SPIREUpstream gets the root's CA from another server speaking SPIRE's
// server API (a real spire-server or an arbor server of another topology),
// as a downstream tier does: with the SVID of the co-located agent.
type SPIREUpstream struct {
	// ServerAddress is the upstream server's host:port (required).
	ServerAddress string
	// WorkloadAPISocket is the co-located agent's Workload API socket.
	// Default the server's Agent.SocketPath.
	WorkloadAPISocket string
}

// Agent is the agent block of a server: the agent running beside it,
// attested to its parent, that serves the server its downstream SVID.
type Agent struct {
	// NodeAttestor is how the agent attests to the parent. Default
	// join_token (with the token supplied at start).
	NodeAttestor AgentAttestor
	// SocketPath is the agent's Workload API socket. Default
	// StateDir/agent.sock.
	SocketPath string
	// DataDir keeps the agent's SVID and keys. Default StateDir/agent.
	DataDir string
	// SPIFFEID is the agent's alias ID: the parent ID of the server's
	// downstream entry. Default spiffe://<td>/arbor/agent/<server name>.
	SPIFFEID spiffeid.ID
	// ServerSelectors identify the server process to its agent; empty (the
	// default) means apply uses the user that runs the server (unix:uid).
	ServerSelectors []string
	// SyncInterval. Default the defaults block's, else DefaultSyncInterval.
	SyncInterval time.Duration
	// WorkloadAttestors are the workload_attestor blocks, one per kind, in
	// file order: how the agent attests the processes calling its
	// Workload API. unix always runs, with its defaults when no block
	// configures it.
	WorkloadAttestors []WorkloadAttestor
	// SDS is the sds block: Envoy's Secret Discovery Service on the
	// agent's socket. Zero (no block): served with SPIRE's names.
	SDS SDS
	// Range is the agent block header, or the server's when defaulted.
	Range hcl.Range
}

// SDS is an agent's sds block, with spire-agent's attribute names (in
// parentheses) and one of arbor's. An empty name means SPIRE's default.
type SDS struct {
	// DefaultSVIDName (default_svid_name, default "default") names the
	// workload's first X509-SVID.
	DefaultSVIDName string
	// DefaultBundleName (default_bundle_name, default "ROOTCA") names the
	// validation context of the agent's trust domain.
	DefaultBundleName string
	// DefaultAllBundlesName (default_all_bundles_name, default "ALL")
	// names the validation context of every bundle of the workload.
	DefaultAllBundlesName string
	// DisableSPIFFECertValidation (disable_spiffe_cert_validation) sends a
	// plain trusted_ca instead of Envoy's SPIFFE certificate validator.
	DisableSPIFFECertValidation bool
	// Disabled (disabled, arbor's) serves no SDS on the socket.
	Disabled bool
	// Range is the sds block header; zero without one.
	Range hcl.Range
}

// Workload attestor kinds of an agent block.
const (
	WorkloadAttestorUnix   = "unix"
	WorkloadAttestorK8s    = "k8s"
	WorkloadAttestorDocker = "docker"
)

// WorkloadAttestor is one workload_attestor "KIND" block of an agent
// block. Only the field of its Kind is set. The names in parentheses are
// SPIRE's plugin_data for the plugin of that name.
type WorkloadAttestor struct {
	// Kind is WorkloadAttestorUnix, WorkloadAttestorK8s or
	// WorkloadAttestorDocker.
	Kind   string
	Unix   UnixWorkloadAttestor
	K8s    K8sWorkloadAttestor
	Docker DockerWorkloadAttestor
	// Range is the block's label.
	Range hcl.Range
}

// UnixWorkloadAttestor configures the unix workload attestor.
type UnixWorkloadAttestor struct {
	// DiscoverWorkloadPath (discover_workload_path) adds unix:path and
	// unix:sha256 selectors.
	DiscoverWorkloadPath bool
}

// K8sWorkloadAttestor configures the k8s workload attestor: the caller's
// pod and container from its cgroups, looked up in the node's kubelet.
// Zero values mean the attestor's defaults.
type K8sWorkloadAttestor struct {
	// KubeletSecurePort (kubelet_secure_port, default 10250) or
	// KubeletReadOnlyPort (kubelet_read_only_port): how the kubelet is
	// reached; at most one.
	KubeletSecurePort, KubeletReadOnlyPort int
	// KubeletCAPath (kubelet_ca_path), SkipKubeletVerification
	// (skip_kubelet_verification): how the kubelet's certificate is
	// verified.
	KubeletCAPath           string
	SkipKubeletVerification bool
	// TokenPath (token_path), or CertificatePath and PrivateKeyPath
	// (certificate_path, private_key_path), or UseAnonymousAuthentication
	// (use_anonymous_authentication): the agent's credentials for the
	// kubelet.
	TokenPath, CertificatePath, PrivateKeyPath string
	UseAnonymousAuthentication                 bool
	// NodeName (node_name) or NodeNameEnv (node_name_env, default
	// MY_NODE_NAME): the agent's node.
	NodeName, NodeNameEnv string
	// MaxPollAttempts (max_poll_attempts) and PollRetryInterval
	// (poll_retry_interval): how long a container not yet listed is asked
	// for again.
	MaxPollAttempts   int
	PollRetryInterval time.Duration
	// DisableContainerSelectors (disable_container_selectors) leaves out
	// the container-name and container-image selectors.
	DisableContainerSelectors bool
}

// DockerWorkloadAttestor configures the docker workload attestor.
type DockerWorkloadAttestor struct {
	// SocketPath (docker_socket_path, default /var/run/docker.sock) and
	// APIVersion (docker_version, default negotiated).
	SocketPath, APIVersion string
	// EnvKeys (arbor's env_keys) are the environment variables that become
	// docker:env selectors; none by default (SPIRE turns every variable
	// into one, secrets included).
	EnvKeys []string
}

// AgentAttestor is the node_attestor block of an agent block. Only the
// fields of its Kind are set.
type AgentAttestor struct {
	// Kind is NodeAttestorJoinToken, NodeAttestorX509PoP,
	// NodeAttestorAWSIID or NodeAttestorK8sPSAT.
	Kind string
	// Token is the join token (join_token); "" means supplied at start.
	Token string
	// PrivateKeyPath, CertificatePath and IntermediatesPath (x509pop).
	PrivateKeyPath    string
	CertificatePath   string
	IntermediatesPath string
	// EC2MetadataEndpoint (aws_iid; SPIRE's ec2_metadata_endpoint) is the
	// base URL of the instance metadata service; "" means the SDK's
	// default (http://169.254.169.254).
	EC2MetadataEndpoint string
	// Cluster (k8s_psat) names the agent's Kubernetes cluster: one of the
	// clusters of the parent's k8s_psat attestor.
	Cluster string
	// TokenPath (k8s_psat) is the file holding the pod's projected service
	// account token. Default DefaultK8sPSATTokenPath; a relative path is
	// relative to the topology file's directory.
	TokenPath string
	// ServiceAccount and IdentityTokenHost (gcp_iit; SPIRE's
	// service_account, identity_token_host): the instance service account
	// whose identity token is sent ("" means "default") and the metadata
	// server's host ("" means metadata.google.internal).
	ServiceAccount, IdentityTokenHost string
	// ResourceID (azure_msi; SPIRE's resource_id) is the resource the
	// managed identity token is asked for, the audience the parent checks
	// ("" means https://management.azure.com/); MetadataEndpoint
	// (arbor's metadata_endpoint) the metadata service's base URL ("" means
	// http://169.254.169.254).
	ResourceID, MetadataEndpoint string
	// Range is the block's label (the kind), or the agent block's header
	// when defaulted.
	Range hcl.Range

	// clusterRange is where cluster is written (k8s_psat).
	clusterRange hcl.Range
}

// BundleEndpoint is a server's bundle_endpoint block.
type BundleEndpoint struct {
	// Listen is the TCP address the endpoint is served on.
	Listen string
	// Profile is ProfileHTTPSSPIFFE (default: the server's SVID) or
	// ProfileHTTPSWeb (CertFile and KeyFile).
	Profile string
	// RefreshHint is served as spiffe_refresh_hint.
	RefreshHint time.Duration
	// CertFile and KeyFile are the Web PKI certificate and key of https_web.
	CertFile, KeyFile string
	Range             hcl.Range
	// refreshHintRange is where refresh_hint is set; nil when defaulted.
	refreshHintRange *hcl.Range
}

// OIDCDiscovery is a server's oidc_discovery block.
type OIDCDiscovery struct {
	Listen            string
	Issuer            string
	CertFile, KeyFile string
	Range             hcl.Range
}

// DefaultBundleRefreshHint is a bundle endpoint's refresh_hint by default.
const DefaultBundleRefreshHint = 5 * time.Minute

// Entry is an entry "NAME" block: a registration entry the server holds.
type Entry struct {
	// Name is the block label, unique within the server.
	Name     string
	SPIFFEID spiffeid.ID
	ParentID spiffeid.ID
	// Selectors as written ("type:value"), at least one.
	Selectors []string
	// X509SVIDTTL and JWTSVIDTTL: zero means the server's.
	X509SVIDTTL   time.Duration
	JWTSVIDTTL    time.Duration
	DNSNames      []string
	Admin         bool
	Downstream    bool
	FederatesWith []string
	Hint          string
	Range         hcl.Range

	federatesRange hcl.Range
}

// Federation is a federation "TRUST_DOMAIN" block: a foreign trust domain
// whose bundle one server (FetchedBy) fetches from its bundle endpoint and
// passes down to the servers below it.
type Federation struct {
	TrustDomain    spiffeid.TrustDomain
	BundleEndpoint string
	// Profile is ProfileHTTPSWeb (default) or ProfileHTTPSSPIFFE.
	Profile string
	// EndpointSPIFFEID is the endpoint server's ID (https_spiffe only).
	EndpointSPIFFEID spiffeid.ID
	// BootstrapBundle is a file with the trust domain's bundle (PEM
	// certificates or a SPIFFE bundle) for the first https_spiffe contact,
	// stored when no bundle of it is held yet; "" for none.
	BootstrapBundle string
	// FetchedBy names the server that holds the relationship and fetches
	// the bundle; its subtree receives the bundle through the bundle sync.
	// Default the root's name.
	FetchedBy string
	Range     hcl.Range

	// fetchedByRange is where fetched_by was written; the block header
	// when it was not.
	fetchedByRange hcl.Range
}

// Fetcher returns the server that fetches fed's bundle: the one its
// FetchedBy names, else (FetchedBy empty, in a File built in code) the root.
// It is nil when no such server exists.
func (f *File) Fetcher(fed Federation) *Server {
	if fed.FetchedBy == "" {
		return f.Root()
	}
	return f.server(fed.FetchedBy)
}

// FederationsFetchedBy returns, in file order, the federations whose bundle
// the server named name fetches.
func (f *File) FederationsFetchedBy(name string) []Federation {
	var out []Federation
	for _, fed := range f.Federations {
		if s := f.Fetcher(fed); s != nil && s.Name == name {
			out = append(out, fed)
		}
	}
	return out
}

// InSubtree reports whether the server named name is ancestor or one of
// its descendants (false when either is unknown or the parents loop).
func (f *File) InSubtree(name, ancestor string) bool {
	seen := map[string]bool{}
	for name != "" && !seen[name] {
		s := f.server(name)
		if s == nil {
			return false
		}
		if s.Name == ancestor {
			return true
		}
		seen[name] = true
		name = s.Parent
	}
	return false
}

// Root returns the file's root server (the one without a parent), or nil.
func (f *File) Root() *Server {
	for _, s := range f.Servers {
		if s.Parent == "" {
			return s
		}
	}
	return nil
}

// Children returns the servers whose parent is name, in file order.
func (f *File) Children(name string) []*Server {
	var out []*Server
	for _, s := range f.Servers {
		if s.Parent == name && s.Name != name {
			out = append(out, s)
		}
	}
	return out
}

// Depth is the tier of a server: 0 for the root, 1 for its children...
// It is -1 when the server is unknown or its parents form a cycle.
func (f *File) Depth(name string) int {
	d := 0
	seen := map[string]bool{}
	for name != "" {
		if seen[name] {
			return -1
		}
		seen[name] = true
		s := f.server(name)
		if s == nil {
			return -1
		}
		if s.Parent == "" {
			return d
		}
		name = s.Parent
		d++
	}
	return d
}

func (f *File) server(name string) *Server {
	for _, s := range f.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Walk returns the servers of the tree in depth-first order from the root,
// children in file order: the order every tool prints.
func (f *File) Walk() []*Server {
	var out []*Server
	var visit func(s *Server)
	visit = func(s *Server) {
		out = append(out, s)
		for _, c := range f.Children(s.Name) {
			visit(c)
		}
	}
	for _, s := range f.Servers {
		if s.Parent == "" {
			visit(s)
		}
	}
	return out
}
