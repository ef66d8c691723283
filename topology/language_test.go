package topology

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVariables(t *testing.T) {
	const src = `
trust_domain = "example.org"
variable "ttl" {
  default = "48h"
}
variable "port" {
  default = 8081
}
variable "name" {}
server "root" {
  listen     = "127.0.0.1:${var.port}"
  ca_ttl     = var.ttl
  jwt_issuer = "https://${var.name}"
}
`
	tests := []struct {
		name     string
		opts     Options
		wantTTL  time.Duration
		wantList string
		wantIss  string
		wantErr  string
	}{
		{"defaults and env", Options{LookupEnv: envOf("ARBOR_VAR_name", "oidc")}, 48 * time.Hour, "127.0.0.1:8081", "https://oidc", ""},
		{"--var wins over env", Options{Vars: map[string]string{"name": "cli", "ttl": "7d", "port": "9000"}, LookupEnv: envOf("ARBOR_VAR_name", "env")}, 7 * day, "127.0.0.1:9000", "https://cli", ""},
		{"unset variable", Options{LookupEnv: envOf()}, 0, "", "", "Variable not set"},
		{"undeclared --var", Options{Vars: map[string]string{"name": "x", "nmae": "y"}, LookupEnv: envOf()}, 0, "", "", "Undeclared variable"},
		{"number variable given text", Options{Vars: map[string]string{"name": "x", "port": "http"}, LookupEnv: envOf()}, 0, "", "", "Invalid variable value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, diags := ParseWith([]byte(src), testPath, tt.opts)
			if tt.wantErr != "" {
				if len(diags) != 1 || diags[0].Summary != tt.wantErr || diags[0].Subject == nil {
					t.Fatalf("ParseWith() = %s, want one %q", FormatDiagnostics(diags, nil), tt.wantErr)
				}
				return
			}
			if diags.HasErrors() {
				t.Fatalf("ParseWith():\n%s", FormatDiagnostics(diags, nil))
			}
			s := f.Servers[0]
			if s.CATTL != tt.wantTTL || s.Listen != tt.wantList || s.JWTIssuer != tt.wantIss {
				t.Errorf("got ca_ttl %v listen %q issuer %q, want %v %q %q", s.CATTL, s.Listen, s.JWTIssuer, tt.wantTTL, tt.wantList, tt.wantIss)
			}
		})
	}
}

func envOf(kv ...string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1], true
			}
		}
		return "", false
	}
}

func TestUpstreamBlocks(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Upstream
	}{
		{"disk", `upstream "disk" {
  cert_file_path = "up/ca.pem"
  key_file_path  = "/k.pem"
}`, Upstream{Kind: UpstreamDisk, Disk: &DiskUpstream{CertFilePath: "/etc/arbor/up/ca.pem", KeyFilePath: "/k.pem"}}},
		{"vault approle", `upstream "vault" {
  address   = "https://vault:8200"
  namespace = "team"
  auth "approle" {
    role_id   = "r"
    secret_id = "s"
  }
}`, Upstream{Kind: UpstreamVault, Vault: &VaultUpstream{Address: "https://vault:8200", PKIMount: "pki", Namespace: "team",
			Auth: VaultAuth{Method: VaultAuthAppRole, Mount: "approle", RoleID: "r", SecretID: "s"}}}},
		{"vault kubernetes", `upstream "vault" {
  address   = "http://127.0.0.1:8200"
  pki_mount = "/pki_int/"
  auth "kubernetes" {
    role = "arbor"
  }
}`, Upstream{Kind: UpstreamVault, Vault: &VaultUpstream{Address: "http://127.0.0.1:8200", PKIMount: "pki_int",
			Auth: VaultAuth{Method: VaultAuthKubernetes, Mount: "kubernetes", Role: "arbor", TokenPath: DefaultKubernetesTokenPath}}}},
		{"aws_pca", `upstream "aws_pca" {
  region                    = "eu-west-3"
  certificate_authority_arn = "arn:aws:acm-pca:eu-west-3:1:certificate-authority/x"
}`, Upstream{Kind: UpstreamAWSPCA, AWSPCA: &AWSPCAUpstream{Region: "eu-west-3", CertificateAuthorityARN: "arn:aws:acm-pca:eu-west-3:1:certificate-authority/x",
			CASigningTemplateARN: DefaultPCATemplateARN}}},
		{"spire", `upstream "spire" {
  server_address = "spire.example.org:8081"
}
agent {
  node_attestor "x509pop" {
    private_key_path = "k"
    certificate_path = "c"
  }
}`, Upstream{Kind: UpstreamSPIRE, SPIRE: &SPIREUpstream{ServerAddress: "spire.example.org:8081", WorkloadAPISocket: "/etc/arbor/.arbor/topology/root/agent.sock"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "trust_domain = \"example.org\"\nserver \"root\" {\n  key_type = \"ec-p384\"\n" + tt.body + "\n}\n"
			f := mustParse(t, src, testPath)
			if diff := cmp.Diff(&tt.want, f.Servers[0].Upstream, cmpOpts...); diff != "" {
				t.Errorf("upstream mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFederationAndEntries(t *testing.T) {
	f := parseExample(t, "federation.hcl")
	if len(f.Federations) != 2 || f.Federations[0].Profile != ProfileHTTPSSPIFFE || f.Federations[1].Profile != ProfileHTTPSWeb ||
		f.Federations[0].EndpointSPIFFEID.String() != "spiffe://partner.example/spire/server" {
		t.Errorf("federations = %+v", f.Federations)
	}
	e := f.Servers[0].Entries[1]
	if e.Name != "billing" || e.SPIFFEID.String() != "spiffe://example.org/billing" || strings.Join(e.FederatesWith, ",") != "partner.example,payments.example" {
		t.Errorf("entry billing = %+v", e)
	}
}

// TestFederationFetchedBy: fetched_by names the server that fetches a
// federation's bundle, the root when absent; the file says which server
// fetches what, and which servers are below it.
func TestFederationFetchedBy(t *testing.T) {
	f, diags := ParseFile("testdata/spire/federation-fetched-by.hcl")
	if diags.HasErrors() {
		t.Fatalf("ParseFile: %s", FormatDiagnostics(diags, nil))
	}
	names := func(feds []Federation) string {
		var out []string
		for _, fed := range feds {
			out = append(out, fed.TrustDomain.Name()+"@"+fed.FetchedBy)
		}
		return strings.Join(out, ",")
	}
	if got, want := names(f.Federations), "partner.example@regional,payments.example@root"; got != want {
		t.Errorf("Federations = %s, want %s (fetched_by resolved, the root by default)", got, want)
	}
	for _, tt := range []struct{ server, want string }{
		{"root", "payments.example@root"}, {"regional", "partner.example@regional"}, {"leaf", ""},
	} {
		if got := names(f.FederationsFetchedBy(tt.server)); got != tt.want {
			t.Errorf("FederationsFetchedBy(%q) = %q, want %q", tt.server, got, tt.want)
		}
	}
	built := Federation{TrustDomain: f.Federations[0].TrustDomain}
	if s := f.Fetcher(built); s == nil || s.Name != "root" {
		t.Errorf("Fetcher of a federation without FetchedBy = %v, want the root", s)
	}
	for _, tt := range []struct {
		name, ancestor string
		want           bool
	}{
		{"leaf", "regional", true}, {"leaf", "root", true}, {"regional", "regional", true},
		{"root", "regional", false}, {"regional", "leaf", false}, {"nope", "root", false},
	} {
		if got := f.InSubtree(tt.name, tt.ancestor); got != tt.want {
			t.Errorf("InSubtree(%q, %q) = %v, want %v", tt.name, tt.ancestor, got, tt.want)
		}
	}
	cfg, err := Render(f, "leaf")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := cfg.WriteHCL(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `fetched_by         = "regional"`) {
		t.Errorf("Render(leaf) does not say who fetches partner.example:\n%s", b.String())
	}
	// The graph links each federated trust domain to the server fetching it.
	for format, want := range map[string][]string{
		GraphDOT:     {`n1 -> f0 [style=dashed`, `n0 -> f1 [style=dashed`}, // n1 is regional, n0 the root
		GraphMermaid: {`n1 <-.->|https_spiffe| f0`, `n0 <-.->|https_web| f1`},
	} {
		b.Reset()
		if err := WriteGraph(&b, f, format); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("WriteGraph(%s) lacks %q:\n%s", format, w, b.String())
			}
		}
	}
}
