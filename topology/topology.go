package topology

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrUnknownServer is returned (wrapped) by File.Server when no server block
// has the requested name.
var ErrUnknownServer = errors.New("topology: unknown server")

// Built-in defaults, used when neither the server block nor the defaults
// block sets a value. The TTLs are SPIRE's defaults.
const (
	DefaultListen       = "127.0.0.1:8081"
	DefaultHealthListen = "127.0.0.1:8080"
	DefaultCATTL        = 24 * time.Hour
	DefaultX509SVIDTTL  = time.Hour
	DefaultJWTSVIDTTL   = 5 * time.Minute
	DefaultKeyType      = KeyTypeECP256
	DefaultCAKeyStorage = CAKeyStorageDisk
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
	// DefaultJoinTokenTTL is how long a generated join token stays valid when
	// the request does not say (SPIRE's `token generate` default).
	DefaultJoinTokenTTL = 10 * time.Minute
	// DefaultStateDirName is the folder, next to the topology file, under
	// which each server gets its own state directory (.arbor/<name>).
	DefaultStateDirName = ".arbor"
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
	// Address is how agents and child servers reach Listen. Default Listen.
	Address string
	// AdminSocket is the Unix socket of the admin API. Default
	// StateDir/admin.sock.
	AdminSocket string
	// HealthListen is the TCP address of the HTTP health endpoints; "" means
	// disabled (written as "" or "off" in the file). Default DefaultHealthListen.
	HealthListen string
	// StateDir holds the server's keys, SQLite database and admin socket.
	// Default .arbor/NAME next to the topology file. A relative path in the
	// file is relative to the topology file's directory.
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

	// attrs records where each attribute of the block was written, so that
	// later validation can point at it.
	attrs map[string]hcl.Range
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

// NodeAttestor is one node_attestor block of a server.
type NodeAttestor struct {
	// Kind is NodeAttestorJoinToken or NodeAttestorX509PoP.
	Kind string
	// JoinToken is set when Kind is NodeAttestorJoinToken.
	JoinToken JoinToken
	// X509PoP is set when Kind is NodeAttestorX509PoP.
	X509PoP X509PoP
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
