package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/hcl/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/zclconf/go-cty/cty"
)

// testPath is where the snippets pretend to live; paths resolve against
// its directory.
const testPath = "/etc/arbor/topology.hcl"

var cmpOpts = []cmp.Option{
	cmpopts.IgnoreUnexported(Server{}, AgentAttestor{}),
	cmpopts.IgnoreTypes(hcl.Range{}),
	cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b }),
	cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b }),
	cmp.Comparer(func(a, b cty.Value) bool { return a.Equals(b).True() }),
}

func mustParse(t *testing.T, src, filename string) *File {
	t.Helper()
	f, diags := Parse([]byte(src), filename)
	if len(diags) > 0 {
		t.Fatalf("Parse() diagnostics:\n%s", FormatDiagnostics(diags, nil))
	}
	return f
}

func TestParseFullFile(t *testing.T) {
	const src = `
trust_domain = "example.org"

defaults {
  ca_ttl        = "48h"
  x509_svid_ttl = "2h"
  jwt_svid_ttl  = "10m"
  key_type      = "ec-p384"
  log_level     = "debug"
  log_format    = "json"
}

server "root" {
  listen         = "0.0.0.0:8081"
  address        = "root.example.org:8081"
  admin_socket   = "/run/arbor/root.sock"
  health_listen  = "off"
  state_dir      = "/var/lib/arbor/root"
  ca_ttl         = "90d"
  x509_svid_ttl  = "12h"
  jwt_svid_ttl   = "15m"
  key_type       = "rsa-2048"
  jwt_key_type   = "ec-p256"
  ca_key_storage = "memory"
  log_level      = "warn"
  log_format     = "text"
  jwt_issuer     = "https://oidc.example.org"

  datastore "postgres" {
    dsn = "postgres://arbor@db/arbor"
  }
  node_attestor "x509pop" {
    ca_bundle_paths     = ["pki/agents.pem", "/etc/pki/other.pem"]
    agent_path_template = "x509pop/{{ .Fingerprint }}"
  }
  node_attestor "join_token" {
    default_ttl = "1h"
  }
}

server "us-east" {
  parent = "root"
  datastore "sqlite" {
    path = "db/us-east.sqlite3"
  }
  agent {
    node_attestor "x509pop" {
      private_key_path = "pki/us-east.key"
      certificate_path = "pki/us-east.pem"
    }
  }
}
`
	got := mustParse(t, src, testPath)
	want := &File{
		Path:        testPath,
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Defaults: Defaults{
			CATTL:       48 * time.Hour,
			X509SVIDTTL: 2 * time.Hour,
			JWTSVIDTTL:  10 * time.Minute,
			KeyType:     KeyTypeECP384,
			LogLevel:    "debug",
			LogFormat:   "json",
		},
		Servers: []*Server{
			{
				Name:         "root",
				Listen:       "0.0.0.0:8081",
				Addresses:    []string{"root.example.org:8081"},
				Address:      "root.example.org:8081",
				AdminSocket:  "/run/arbor/root.sock",
				HealthListen: "",
				StateDir:     "/var/lib/arbor/root",
				CATTL:        90 * 24 * time.Hour,
				X509SVIDTTL:  12 * time.Hour,
				JWTSVIDTTL:   15 * time.Minute,
				KeyType:      KeyTypeRSA2048,
				JWTKeyType:   KeyTypeECP256,
				CAKeyStorage: CAKeyStorageMemory,
				Datastore:    Datastore{Kind: DatastorePostgres, DSN: "postgres://arbor@db/arbor"},
				NodeAttestors: []NodeAttestor{
					{Kind: NodeAttestorX509PoP, X509PoP: X509PoP{
						CABundlePaths:     []string{"/etc/arbor/pki/agents.pem", "/etc/pki/other.pem"},
						AgentPathTemplate: "x509pop/{{ .Fingerprint }}",
					}},
					{Kind: NodeAttestorJoinToken, JoinToken: JoinToken{DefaultTTL: time.Hour}},
				},
				LogLevel:     "warn",
				LogFormat:    "text",
				JWTIssuer:    "https://oidc.example.org",
				Host:         "root.example.org",
				Replicas:     1,
				SPIFFEID:     spiffeid.RequireFromString("spiffe://example.org/arbor/server/root"),
				AgentSVIDTTL: 12 * time.Hour,
			},
			{
				Name:          "us-east",
				Parent:        "root",
				Listen:        DefaultListen,
				Addresses:     []string{DefaultListen},
				Address:       DefaultListen,
				AdminSocket:   "/etc/arbor/.arbor/topology/us-east/admin.sock",
				HealthListen:  DefaultHealthListen,
				StateDir:      "/etc/arbor/.arbor/topology/us-east",
				CATTL:         48 * time.Hour,
				X509SVIDTTL:   2 * time.Hour,
				JWTSVIDTTL:    10 * time.Minute,
				KeyType:       KeyTypeECP384,
				JWTKeyType:    KeyTypeECP384,
				CAKeyStorage:  CAKeyStorageDisk,
				Datastore:     Datastore{Kind: DatastoreSQLite, Path: "/etc/arbor/db/us-east.sqlite3"},
				NodeAttestors: []NodeAttestor{{Kind: NodeAttestorJoinToken, JoinToken: JoinToken{DefaultTTL: DefaultJoinTokenTTL}}},
				LogLevel:      "debug",
				LogFormat:     "json",
				Host:          LocalHost,
				Replicas:      1,
				SPIFFEID:      spiffeid.RequireFromString("spiffe://example.org/arbor/server/us-east"),
				AgentSVIDTTL:  2 * time.Hour,
				Agent: &Agent{
					NodeAttestor: AgentAttestor{Kind: NodeAttestorX509PoP, PrivateKeyPath: "/etc/arbor/pki/us-east.key", CertificatePath: "/etc/arbor/pki/us-east.pem"},
					SocketPath:   "/etc/arbor/.arbor/topology/us-east/agent.sock",
					DataDir:      "/etc/arbor/.arbor/topology/us-east/agent",
					SPIFFEID:     spiffeid.RequireFromString("spiffe://example.org/arbor/agent/us-east"),
					SyncInterval: DefaultSyncInterval,
				},
			},
		},
	}
	if diff := cmp.Diff(want, got, cmpOpts...); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}

	root := got.Servers[0]
	if root.Range.Start.Line != 13 || root.Range.Filename != testPath {
		t.Errorf("root.Range = %v, want %s line 13", root.Range, testPath)
	}
	if r := root.AttrRange("ca_ttl"); r.Start.Line != 19 || r.Start.Column != 20 {
		t.Errorf(`root.AttrRange("ca_ttl") = %v, want line 19 col 20`, r)
	}
	if r := got.Servers[1].AttrRange("ca_ttl"); r != got.Servers[1].Range {
		t.Errorf(`us-east.AttrRange("ca_ttl") = %v, want the block range %v`, r, got.Servers[1].Range)
	}
	if na, ok := root.NodeAttestor(NodeAttestorJoinToken); !ok || na.JoinToken.DefaultTTL != time.Hour {
		t.Errorf("root.NodeAttestor(join_token) = %+v, %v; want default_ttl 1h", na, ok)
	}
	if _, ok := got.Servers[1].NodeAttestor(NodeAttestorX509PoP); ok {
		t.Errorf("us-east.NodeAttestor(x509pop) found, want none")
	}
}

func TestParseMinimalDefaults(t *testing.T) {
	got := mustParse(t, "trust_domain = \"example.org\"\nserver \"root\" {}\n", "topo/quick.hcl")
	want := &Server{
		Name:          "root",
		Listen:        "127.0.0.1:8081",
		Addresses:     []string{"127.0.0.1:8081"},
		Address:       "127.0.0.1:8081",
		AdminSocket:   "topo/.arbor/quick/root/admin.sock",
		HealthListen:  "127.0.0.1:8080",
		StateDir:      "topo/.arbor/quick/root",
		CATTL:         24 * time.Hour,
		X509SVIDTTL:   time.Hour,
		JWTSVIDTTL:    5 * time.Minute,
		KeyType:       KeyTypeECP256,
		JWTKeyType:    KeyTypeECP256,
		CAKeyStorage:  CAKeyStorageDisk,
		Datastore:     Datastore{Kind: DatastoreSQLite, Path: "topo/.arbor/quick/root/datastore.sqlite3"},
		NodeAttestors: []NodeAttestor{{Kind: NodeAttestorJoinToken, JoinToken: JoinToken{DefaultTTL: 10 * time.Minute}}},
		LogLevel:      "info",
		LogFormat:     "text",
		Host:          LocalHost,
		Replicas:      1,
		SPIFFEID:      spiffeid.RequireFromString("spiffe://example.org/arbor/server/root"),
		AgentSVIDTTL:  time.Hour,
	}
	if diff := cmp.Diff([]*Server{want}, got.Servers, cmpOpts...); diff != "" {
		t.Errorf("Parse() servers mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Defaults{}, got.Defaults, cmpOpts...); diff != "" {
		t.Errorf("Parse() defaults mismatch (-want +got):\n%s", diff)
	}
}

func TestDefaultsInheritance(t *testing.T) {
	type ttls struct {
		CA, X509, JWT time.Duration
		Key, JWTKey   KeyType
		Level, Format string
	}
	tests := []struct {
		name     string
		defaults string
		server   string
		want     ttls
	}{
		{
			name: "built-in",
			want: ttls{24 * time.Hour, time.Hour, 5 * time.Minute, KeyTypeECP256, KeyTypeECP256, "info", "text"},
		},
		{
			name:     "defaults block",
			defaults: `ca_ttl = "7d"` + "\n" + `x509_svid_ttl = "3h"` + "\n" + `jwt_svid_ttl = "1m"` + "\n" + `key_type = "rsa-4096"` + "\n" + `log_format = "json"`,
			want:     ttls{7 * 24 * time.Hour, 3 * time.Hour, time.Minute, KeyTypeRSA4096, KeyTypeRSA4096, "info", "json"},
		},
		{
			name:     "server overrides defaults",
			defaults: `ca_ttl = "7d"` + "\n" + `x509_svid_ttl = "3h"` + "\n" + `jwt_key_type = "ec-p384"` + "\n" + `log_level = "error"`,
			server:   `ca_ttl = "48h"` + "\n" + `jwt_svid_ttl = "2m"` + "\n" + `key_type = "rsa-2048"` + "\n" + `log_level = "debug"`,
			want:     ttls{48 * time.Hour, 3 * time.Hour, 2 * time.Minute, KeyTypeRSA2048, KeyTypeECP384, "debug", "text"},
		},
		{
			name:   "jwt key type follows the server key type",
			server: `key_type = "ec-p384"`,
			want:   ttls{24 * time.Hour, time.Hour, 5 * time.Minute, KeyTypeECP384, KeyTypeECP384, "info", "text"},
		},
		{
			name:     "server key type beats defaults key type for jwt",
			defaults: `key_type = "rsa-2048"`,
			server:   `key_type = "ec-p384"`,
			want:     ttls{24 * time.Hour, time.Hour, 5 * time.Minute, KeyTypeECP384, KeyTypeECP384, "info", "text"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("trust_domain = \"example.org\"\ndefaults {\n%s\n}\nserver \"a\" {\n%s\n}\n", tt.defaults, tt.server)
			f := mustParse(t, src, testPath)
			s := f.Servers[0]
			got := ttls{s.CATTL, s.X509SVIDTTL, s.JWTSVIDTTL, s.KeyType, s.JWTKeyType, s.LogLevel, s.LogFormat}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("effective settings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnvAndFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "dsn"), []byte("postgres://from-file/db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "td"), []byte("file.example"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARBOR_TEST_LISTEN", "127.0.0.1:9999")
	t.Setenv("ARBOR_TEST_EMPTY", "")
	os.Unsetenv("ARBOR_TEST_UNSET")

	const src = `
trust_domain = file("td")
server "a" {
  listen    = env("ARBOR_TEST_LISTEN")
  address   = env("ARBOR_TEST_UNSET", "a.example:8081")
  jwt_issuer = "https://${env("ARBOR_TEST_EMPTY", "ignored")}x"
  datastore "postgres" {
    dsn = trimspace(file("secrets/dsn"))
  }
}
server "b" {
  parent = "a"
  listen = "127.0.0.1:9998"
  health_listen = "off"
  ca_ttl = "12h"
  agent {
    node_attestor "join_token" {}
  }
  datastore "postgres" {
    dsn = file("secrets/dsn")
  }
}
`
	f, diags := Parse([]byte(src), filepath.Join(dir, "topology.hcl"))
	if diags.HasErrors() {
		t.Fatalf("Parse() diagnostics:\n%s", FormatDiagnostics(diags, nil))
	}
	a, b := f.Servers[0], f.Servers[1]
	checks := []struct{ what, got, want string }{
		{"trust domain from file()", f.TrustDomain.Name(), "file.example"},
		{"listen from env()", a.Listen, "127.0.0.1:9999"},
		{"address from env() fallback", a.Address, "a.example:8081"},
		{"empty but set env() wins over fallback", a.JWTIssuer, "https://x"},
		{"dsn from trimspace(file())", a.Datastore.DSN, "postgres://from-file/db"},
		{"file() keeps the newline", b.Datastore.DSN, "postgres://from-file/db\n"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
}

// diagAt is a diagnostic reduced to what the tests compare.
type diagAt struct {
	Pos     string // line:col of the subject start
	Summary string
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", 120))
	os.Unsetenv("ARBOR_TEST_UNSET")
	const td = "trust_domain = \"example.org\"\n"

	tests := []struct {
		name       string
		src        string
		want       []diagAt
		wantDetail string // a fragment of the first diagnostic's detail
	}{
		{
			name: "unknown server attribute",
			src:  td + "server \"a\" {\n  lisen = \"127.0.0.1:1\"\n}\n",
			want: []diagAt{{"3:3", "Unsupported argument"}}, wantDetail: `Did you mean "listen"?`,
		},
		{
			name: "unknown top-level attribute",
			src:  td + "trust = 1\nserver \"a\" {}\n",
			want: []diagAt{{"2:1", "Unsupported argument"}}, wantDetail: "allowed here: trust_domain, variable { }, defaults { }, server { }, federation { }",
		},
		{
			name: "unknown block",
			src:  td + "server \"a\" {}\nwidget {}\n",
			want: []diagAt{{"3:1", "Unsupported block type"}},
		},
		{
			name: "unknown defaults attribute",
			src:  td + "defaults {\n  listen = \"x\"\n}\nserver \"a\" {}\n",
			want: []diagAt{{"3:3", "Unsupported argument"}},
		},
		{
			name: "missing trust domain",
			src:  "server \"a\" {}\n",
			want: []diagAt{{"1:1", "Missing required argument"}}, wantDetail: `"trust_domain" is required`,
		},
		{
			name: "bad trust domain",
			src:  "trust_domain = \"Example Org\"\nserver \"a\" {}\n",
			want: []diagAt{{"1:16", "Invalid trust domain"}}, wantDetail: `such as "example.org"`,
		},
		{
			name: "bad duration",
			src:  td + "server \"a\" {\n  ca_ttl = \"1hour\"\n}\n",
			want: []diagAt{{"3:12", "Invalid duration"}}, wantDetail: `"7d"`,
		},
		{
			name: "number duration",
			src:  td + "server \"a\" {\n  ca_ttl = 3600\n}\n",
			want: []diagAt{{"3:12", "Invalid duration"}}, wantDetail: "missing unit",
		},
		{
			name: "zero duration",
			src:  td + "defaults {\n  jwt_svid_ttl = \"0s\"\n}\nserver \"a\" {}\n",
			want: []diagAt{{"3:18", "Invalid duration"}}, wantDetail: "longer than zero",
		},
		{
			name: "unknown datastore kind",
			src:  td + "server \"a\" {\n  datastore \"mysql\" {}\n}\n",
			want: []diagAt{{"3:13", "Unknown datastore kind"}}, wantDetail: `"postgres" or "sqlite"`,
		},
		{
			name: "postgres without dsn",
			src:  td + "server \"a\" {\n  datastore \"postgres\" {}\n}\n",
			want: []diagAt{{"3:3", "Missing PostgreSQL DSN"}}, wantDetail: `dsn = env("ARBOR_DSN")`,
		},
		{
			name: "dsn on sqlite",
			src:  td + "server \"a\" {\n  datastore \"sqlite\" {\n    dsn = \"x\"\n  }\n}\n",
			want: []diagAt{{"4:5", "Unsupported argument"}},
		},
		{
			name: "two datastores",
			src:  td + "server \"a\" {\n  datastore \"sqlite\" {}\n  datastore \"sqlite\" {}\n}\n",
			want: []diagAt{{"4:3", "Duplicate datastore block"}}, wantDetail: "line 3",
		},
		{
			name: "unknown attestor kind",
			src:  td + "server \"a\" {\n  node_attestor \"gcp_itt\" {}\n}\n",
			want: []diagAt{{"3:17", "Unknown node attestor kind"}}, wantDetail: `Did you mean "gcp_iit"? Use "aws_iid", "azure_msi", "gcp_iit", "join_token", "k8s_psat" or "x509pop"`,
		},
		{
			name: "duplicate attestor",
			src:  td + "server \"a\" {\n  node_attestor \"join_token\" {}\n  node_attestor \"join_token\" {}\n}\n",
			want: []diagAt{{"4:17", "Duplicate node attestor"}}, wantDetail: "line 3",
		},
		{
			name: "x509pop without bundles",
			src:  td + "server \"a\" {\n  node_attestor \"x509pop\" {}\n}\n",
			want: []diagAt{{"3:27", "Missing required argument"}}, wantDetail: "ca_bundle_paths",
		},
		{
			name: "x509pop empty bundle list",
			src:  td + "server \"a\" {\n  node_attestor \"x509pop\" {\n    ca_bundle_paths = []\n  }\n}\n",
			want: []diagAt{{"4:23", "No CA bundles"}},
		},
		{
			name: "x509pop bad template",
			src:  td + "server \"a\" {\n  node_attestor \"x509pop\" {\n    ca_bundle_paths = [\"ca.pem\"]\n    agent_path_template = \"{{ .X\"\n  }\n}\n",
			want: []diagAt{{"5:27", "Invalid agent path template"}},
		},
		{
			name: "empty fetched_by",
			src:  td + "server \"a\" {}\nfederation \"p.test\" {\n  bundle_endpoint = \"https://p.test\"\n  fetched_by = \"\"\n}\n",
			want: []diagAt{{"5:16", "Empty value"}},
		},
		{
			name: "fetched_by names no server",
			src:  td + "server \"a\" {}\nfederation \"p.test\" {\n  bundle_endpoint = \"https://p.test\"\n  fetched_by = \"b\"\n}\n",
			want: []diagAt{{"5:16", "Unknown server in fetched_by"}}, wantDetail: "servers (a)",
		},
		{
			name: "duplicate server",
			src:  td + "server \"a\" {}\n\nserver \"a\" {}\n",
			want: []diagAt{{"4:8", "Duplicate server name"}}, wantDetail: "already declared at line 2",
		},
		{
			name: "invalid server name",
			src:  td + "server \"../x\" {}\n",
			want: []diagAt{{"2:8", "Invalid server name"}},
		},
		{
			name: "no servers",
			src:  td,
			want: []diagAt{{"1:1", "No servers"}},
		},
		{
			name: "duplicate defaults",
			src:  td + "defaults {}\ndefaults {}\nserver \"a\" {}\n",
			want: []diagAt{{"3:1", "Duplicate defaults block"}}, wantDetail: "line 2",
		},
		{
			name: "x509 svid ttl over half the server ca ttl",
			src:  td + "server \"a\" {\n  ca_ttl = \"2h\"\n  x509_svid_ttl = \"90m\"\n}\n",
			want: []diagAt{{"4:19", "SVID TTL too long for the CA"}}, wantDetail: "Lower x509_svid_ttl to at most 1h, or raise ca_ttl to at least 3h",
		},
		{
			name: "short ca ttl against default svid ttl points at ca_ttl",
			src:  td + "server \"a\" {\n  ca_ttl = \"90m\"\n}\n",
			want: []diagAt{{"3:12", "SVID TTL too long for the CA"}}, wantDetail: "the built-in default",
		},
		{
			name: "inherited svid ttl reported once at the defaults block",
			src:  td + "defaults {\n  jwt_svid_ttl = \"13h\"\n}\nserver \"a\" {}\nserver \"b\" {\n  parent = \"a\"\n  listen = \"127.0.0.1:1\"\n  health_listen = \"off\"\n  ca_ttl = \"12h\"\n}\n",
			want: []diagAt{{"3:18", "SVID TTL too long for the CA"}},
		},
		{
			name: "unknown parent",
			src:  td + "server \"root\" {}\nserver \"edge\" {\n  parent = \"rot\"\n  listen = \"127.0.0.1:8082\"\n  health_listen = \"off\"\n}\n",
			want: []diagAt{{"4:12", "Unknown parent server"}}, wantDetail: `Did you mean "root"?`,
		},
		{
			name: "own parent",
			src:  td + "server \"a\" {\n  parent = \"a\"\n}\n",
			want: []diagAt{{"3:12", "Server is its own parent"}},
		},
		{
			name: "bad key type",
			src:  td + "server \"a\" {\n  key_type = \"ec-p521\"\n}\n",
			want: []diagAt{{"3:14", "Invalid key_type"}}, wantDetail: `"ec-p256", "ec-p384", "rsa-2048" or "rsa-4096"`,
		},
		{
			name: "bad log level",
			src:  td + "server \"a\" {\n  log_level = \"inf\"\n}\n",
			want: []diagAt{{"3:15", "Invalid log_level"}}, wantDetail: `Did you mean "info"?`,
		},
		{
			name: "bad ca key storage",
			src:  td + "server \"a\" {\n  ca_key_storage = \"vault\"\n}\n",
			want: []diagAt{{"3:20", "Invalid ca_key_storage"}},
		},
		{
			name: "listen without port",
			src:  td + "server \"a\" {\n  listen = \"localhost\"\n}\n",
			want: []diagAt{{"3:12", "Invalid address"}}, wantDetail: "missing port",
		},
		{
			name: "health listen bad port",
			src:  td + "server \"a\" {\n  health_listen = \"127.0.0.1:http\"\n}\n",
			want: []diagAt{{"3:19", "Invalid address"}},
		},
		{
			name: "wrong type",
			src:  td + "server \"a\" {\n  listen = [\"127.0.0.1:1\"]\n}\n",
			want: []diagAt{{"3:12", "Wrong value type"}},
		},
		{
			name: "null value",
			src:  td + "server \"a\" {\n  jwt_issuer = null\n}\n",
			want: []diagAt{{"3:16", "Missing value"}},
		},
		{
			name: "empty state dir",
			src:  td + "server \"a\" {\n  state_dir = \"\"\n}\n",
			want: []diagAt{{"3:15", "Empty value"}},
		},
		{
			name: "admin socket too long",
			src:  td + "server \"a\" {\n  state_dir = \"" + long + "\"\n}\n",
			want: []diagAt{{"2:1", "Admin socket path too long"}}, wantDetail: "Set admin_socket",
		},
		{
			name: "unset env",
			src:  td + "server \"a\" {\n  listen = env(\"ARBOR_TEST_UNSET\")\n}\n",
			want: []diagAt{{"3:17", "Invalid function argument"}}, wantDetail: "ARBOR_TEST_UNSET is not set",
		},
		{
			name: "env with too many arguments",
			src:  td + "server \"a\" {\n  listen = env(\"ARBOR_TEST_UNSET\", \"a\", \"b\")\n}\n",
			want: []diagAt{{"3:42", "Invalid function argument"}},
		},
		{
			name: "missing file",
			src:  td + "server \"a\" {\n  jwt_issuer = file(\"nope.txt\")\n}\n",
			want: []diagAt{{"3:22", "Invalid function argument"}}, wantDetail: "cannot read",
		},
		{
			name: "unknown function",
			src:  td + "server \"a\" {\n  jwt_issuer = upper(\"x\")\n}\n",
			want: []diagAt{{"3:16", "Call to unknown function"}},
		},
		{
			name: "undeclared variable",
			src:  td + "server \"a\" {\n  jwt_issuer = var.issuer\n}\n",
			want: []diagAt{{"3:19", "Unsupported attribute"}}, wantDetail: "declares no variables",
		},
		{
			name: "syntax error",
			src:  td + "server \"a\" {\n  listen = \n}\n",
			want: []diagAt{{"3:12", "Invalid expression"}},
		},
		{
			name: "several errors in file order",
			src:  td + "server \"a\" {\n  zz = 1\n  aa = 2\n  ca_ttl = \"x\"\n}\n",
			want: []diagAt{{"3:3", "Unsupported argument"}, {"4:3", "Unsupported argument"}, {"5:12", "Invalid duration"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			filename := filepath.Join(dir, "topology.hcl")
			f, diags := Parse([]byte(tt.src), filename)
			if f != nil {
				t.Errorf("Parse() returned a File with errors")
			}
			var got []diagAt
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					continue // warnings have their own tests
				}
				if d.Subject == nil {
					t.Errorf("diagnostic %q has no subject", d.Summary)
					continue
				}
				if d.Subject.Filename != filename {
					t.Errorf("diagnostic %q is in %q, want %q", d.Summary, d.Subject.Filename, filename)
				}
				if d.Detail == "" {
					t.Errorf("diagnostic %q has no detail", d.Summary)
				}
				got = append(got, diagAt{fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column), d.Summary})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Parse() diagnostics mismatch (-want +got):\n%s\nall:\n%s", diff, FormatDiagnostics(diags, nil))
			}
			if tt.wantDetail != "" && !strings.Contains(diags[0].Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", diags[0].Detail, tt.wantDetail)
			}
		})
	}
}

func TestFileServer(t *testing.T) {
	f, _ := Parse([]byte("trust_domain = \"example.org\"\nserver \"root\" {}\nserver \"edge\" {\n  parent = \"root\"\n  listen = \":9000\"\n  health_listen = \"off\"\n  ca_ttl = \"12h\"\n  agent {\n    node_attestor \"join_token\" {}\n  }\n}\n"), testPath)
	s, err := f.Server("edge")
	if err != nil || s.Name != "edge" || s.Parent != "root" {
		t.Fatalf(`Server("edge") = %+v, %v; want the edge server`, s, err)
	}
	_, err = f.Server("egde")
	if !errors.Is(err, ErrUnknownServer) {
		t.Fatalf(`Server("egde") error = %v, want ErrUnknownServer`, err)
	}
	if want := `topology: unknown server "egde" in /etc/arbor/topology.hcl (known servers: root, edge)`; err.Error() != want {
		t.Errorf(`Server("egde") error = %q, want %q`, err, want)
	}
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.hcl")
	if err := os.WriteFile(path, []byte("trust_domain = \"example.org\"\nserver \"a\" {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, diags := ParseFile(path)
	if diags.HasErrors() || f.Servers[0].StateDir != filepath.Join(dir, ".arbor", "t", "a") {
		t.Fatalf("ParseFile(%q) = %+v, %v", path, f, diags)
	}

	f, diags = ParseFile(filepath.Join(dir, "missing.hcl"))
	if f != nil || len(diags) != 1 || diags[0].Summary != "Cannot read topology file" {
		t.Errorf("ParseFile(missing) = %v, %v; want one Cannot read topology file", f, diags)
	}
}

func TestParseJSON(t *testing.T) {
	const src = `{
  "trust_domain": "example.org",
  "server": {
    "root": {
      "ca_ttl": "48h",
      "node_attestor": {"x509pop": {"ca_bundle_paths": ["ca.pem"]}}
    }
  }
}`
	f := mustParse(t, src, "/etc/arbor/topology.hcl.json")
	s := f.Servers[0]
	if s.Name != "root" || s.CATTL != 48*time.Hour || len(s.NodeAttestors) != 1 || s.NodeAttestors[0].X509PoP.CABundlePaths[0] != "/etc/arbor/ca.pem" {
		t.Errorf("Parse(json) server = %+v", s)
	}

	_, diags := Parse([]byte(`{"trust_domain": "example.org", "server": {"a": {"lisen": "x"}}}`), "t.json")
	if len(diags) != 1 || diags[0].Summary != "Extraneous JSON object property" || diags[0].Subject.Start.Line != 1 {
		t.Errorf("Parse(json with unknown attribute) = %v, want one Extraneous JSON object property", diags)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"90m", 90 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"1.5d", 36 * time.Hour, false},
		{"0d", 0, false},
		{"", 0, true},
		{"1hour", 0, true},
		{"3600", 0, true},
		{"d", 0, true},
		{"-1d", 0, true},
		{"1d-1h", 0, true},
		{"1e3d", 0, true},
		{"xd", 0, true},
		{"1d1d", 0, true},
		{"200000000d", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{24 * time.Hour, "24h"},
		{72 * time.Hour, "3d"},
		{90 * time.Minute, "1h30m"},
		{2 * time.Hour, "2h"},
		{5 * time.Minute, "5m"},
		{90 * time.Second, "1m30s"},
		{61 * time.Hour, "61h"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.in); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatDiagnostics(t *testing.T) {
	src := []byte("trust_domain = \"example.org\"\nserver \"a\" {\n  ca_ttl = \"1hour\"\n}\n")
	_, diags := Parse(src, "t.hcl")
	diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "No position", Detail: "line one\nline two"})

	want := `t.hcl:3:12: error: Invalid duration
  ca_ttl = "1hour" is not a valid duration (invalid duration "1hour": unknown unit "hour" in duration "1hour"). Write a number with a unit: "90s", "30m", "1h", "1h30m" or "7d".
warning: No position
  line one
  line two
`
	if got := FormatDiagnostics(diags, nil); got != want {
		t.Errorf("FormatDiagnostics() =\n%s\nwant\n%s", got, want)
	}

	files := map[string]*hcl.File{"t.hcl": {Bytes: src}}
	got := FormatDiagnostics(diags[:1], files)
	if !strings.HasSuffix(got, "     3 |   ca_ttl = \"1hour\"\n") {
		t.Errorf("FormatDiagnostics(with files) =\n%s\nwant the source line last", got)
	}
}

func TestExamples(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, s *Server)
	}{
		{"single-server.hcl", func(t *testing.T, s *Server) {
			dir := filepath.Join("..", "examples", ".arbor", "single-server", "root")
			if s.Listen != "127.0.0.1:8081" || s.AdminSocket != filepath.Join(dir, "admin.sock") ||
				s.Datastore != (Datastore{Kind: DatastoreSQLite, Path: filepath.Join(dir, "datastore.sqlite3")}) ||
				len(s.NodeAttestors) != 1 || s.NodeAttestors[0].Kind != NodeAttestorJoinToken {
				t.Errorf("single-server root = %+v", s)
			}
		}},
		{"x509pop.hcl", func(t *testing.T, s *Server) {
			na, ok := s.NodeAttestor(NodeAttestorX509PoP)
			if !ok || len(na.X509PoP.CABundlePaths) != 1 || na.X509PoP.CABundlePaths[0] != filepath.Join("..", "examples", "agent-ca.pem") {
				t.Errorf("x509pop root attestors = %+v", s.NodeAttestors)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, diags := ParseFile(filepath.Join("..", "examples", tt.file))
			if len(diags) > 0 {
				t.Fatalf("ParseFile(%s):\n%s", tt.file, FormatDiagnostics(diags, nil))
			}
			s, err := f.Server("root")
			if err != nil {
				t.Fatal(err)
			}
			if f.TrustDomain.Name() != "example.org" {
				t.Errorf("trust domain = %q", f.TrustDomain.Name())
			}
			tt.check(t, s)
		})
	}
}
