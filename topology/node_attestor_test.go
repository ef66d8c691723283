package topology

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
)

// treeSrc is a root accepting the attestor block rootAttestor and a child
// "edge" whose co-located agent attests with agentAttestor. The root's
// attestor starts at line 4; the agent's at line 11 after a one-line root
// attestor, at line 18 after k8sRoot.
func treeSrc(rootAttestor, agentAttestor string) string {
	return `trust_domain = "example.org"
server "root" {
  ca_ttl = "48h"
` + rootAttestor + `
}
server "edge" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  agent {
` + agentAttestor + `
  }
}
`
}

// k8sRoot accepts agents of the clusters prod and staging.
const k8sRoot = `  node_attestor "k8s_psat" {
    cluster "prod" {
      service_account_allow_list = ["spire:spire-agent"]
    }
    cluster "staging" {
      service_account_allow_list = ["spire:spire-agent"]
    }
  }`

func TestParseAWSIIDAndK8sPSAT(t *testing.T) {
	src := `trust_domain = "example.org"
server "root" {
  ca_ttl = "48h"
  node_attestor "aws_iid" {
    access_key_id                      = "AKIAEXAMPLE"
    secret_access_key                  = env("ARBOR_TEST_AWS_SECRET")
    assume_role                        = "spire-server-delegate"
    partition                          = "aws-us-gov"
    skip_block_device                  = true
    disable_instance_profile_selectors = true
    account_ids_for_local_validation   = ["123456789012"]
    agent_path_template                = "/{{ .PluginName }}/{{ .Tags.name | lower }}"
    identity_certificate_paths         = ["pki/iid.pem", "/etc/pki/iid2.pem"]
    ec2_endpoint                       = "http://127.0.0.1:4566"
  }
  node_attestor "k8s_psat" {
    cluster "prod" {
      service_account_allow_list = ["spire:spire-agent", "kube-system:arbor.agent"]
      audience                   = []
      kube_config_file           = "kube/prod.yaml"
      allowed_node_label_keys    = ["topology.kubernetes.io/zone"]
      allowed_pod_label_keys     = ["app"]
    }
    cluster "dev" {
      service_account_allow_list = ["dev:agent"]
    }
  }
}
server "ec2" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  agent {
    node_attestor "aws_iid" {
      ec2_metadata_endpoint = "http://169.254.169.254/latest"
    }
  }
}
server "pod" {
  parent        = "root"
  listen        = "127.0.0.1:8083"
  health_listen = "off"
  agent {
    node_attestor "k8s_psat" {
      cluster    = "prod"
      token_path = "tokens/agent"
    }
  }
}
server "pod-dev" {
  parent        = "root"
  listen        = "127.0.0.1:8084"
  health_listen = "off"
  agent {
    node_attestor "k8s_psat" { cluster = "dev" }
  }
}
server "ec2-default" {
  parent        = "root"
  listen        = "127.0.0.1:8085"
  health_listen = "off"
  agent {
    node_attestor "aws_iid" {}
  }
}
`
	// Co-located agents on aws_iid and k8s_psat draw no warning: the file
	// must parse without any diagnostic.
	f, diags := ParseWith([]byte(src), testPath, Options{LookupEnv: envOf("ARBOR_TEST_AWS_SECRET", "s3cr3t-from-env")})
	if len(diags) > 0 {
		t.Fatalf("ParseWith() diagnostics:\n%s", FormatDiagnostics(diags, nil))
	}
	wantRoot := []NodeAttestor{
		{Kind: NodeAttestorAWSIID, AWSIID: AWSIID{
			AccessKeyID:                     "AKIAEXAMPLE",
			SecretAccessKey:                 "s3cr3t-from-env",
			AssumeRole:                      "spire-server-delegate",
			Partition:                       "aws-us-gov",
			SkipBlockDevice:                 true,
			DisableInstanceProfileSelectors: true,
			AccountIDsForLocalValidation:    []string{"123456789012"},
			AgentPathTemplate:               "/{{ .PluginName }}/{{ .Tags.name | lower }}",
			IdentityCertificatePaths:        []string{"/etc/arbor/pki/iid.pem", "/etc/pki/iid2.pem"},
			EC2Endpoint:                     "http://127.0.0.1:4566",
		}},
		{Kind: NodeAttestorK8sPSAT, K8sPSAT: K8sPSAT{Clusters: []K8sPSATCluster{
			{
				Name:                    "prod",
				ServiceAccountAllowList: []string{"spire:spire-agent", "kube-system:arbor.agent"},
				Audience:                []string{},
				KubeConfigFile:          "/etc/arbor/kube/prod.yaml",
				AllowedNodeLabelKeys:    []string{"topology.kubernetes.io/zone"},
				AllowedPodLabelKeys:     []string{"app"},
			},
			{Name: "dev", ServiceAccountAllowList: []string{"dev:agent"}, Audience: []string{DefaultK8sPSATAudience}},
		}}},
	}
	if diff := cmp.Diff(wantRoot, f.Servers[0].NodeAttestors, cmpOpts...); diff != "" {
		t.Errorf("root NodeAttestors mismatch (-want +got):\n%s", diff)
	}
	// An explicit empty audience (the API server's own) stays told apart
	// from the default.
	if a := f.Servers[0].NodeAttestors[1].K8sPSAT.Clusters[0].Audience; a == nil {
		t.Errorf("audience = [] parsed as nil, want an empty list")
	}
	wantAgents := map[string]AgentAttestor{
		"ec2":         {Kind: NodeAttestorAWSIID, EC2MetadataEndpoint: "http://169.254.169.254/latest"},
		"pod":         {Kind: NodeAttestorK8sPSAT, Cluster: "prod", TokenPath: "/etc/arbor/tokens/agent"},
		"pod-dev":     {Kind: NodeAttestorK8sPSAT, Cluster: "dev", TokenPath: DefaultK8sPSATTokenPath},
		"ec2-default": {Kind: NodeAttestorAWSIID},
	}
	for name, want := range wantAgents {
		s, err := f.Server(name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, s.Agent.NodeAttestor, cmpOpts...); diff != "" {
			t.Errorf("agent attestor of %s mismatch (-want +got):\n%s", name, diff)
		}
	}
	k := f.Servers[0].NodeAttestors[1].K8sPSAT
	if c, ok := k.Cluster("dev"); !ok || c.Name != "dev" {
		t.Errorf("Cluster(dev) = %+v, %v", c, ok)
	}
	if _, ok := k.Cluster("nope"); ok {
		t.Errorf("Cluster(nope) found")
	}
	if got := strings.Join(k.ClusterNames(), ","); got != "prod,dev" {
		t.Errorf("ClusterNames() = %s, want prod,dev", got)
	}

	// The smallest aws_iid block takes SPIRE's defaults.
	f = mustParse(t, "trust_domain = \"example.org\"\nserver \"a\" {\n  node_attestor \"aws_iid\" {}\n}\n", testPath)
	if diff := cmp.Diff(AWSIID{Partition: DefaultAWSPartition}, f.Servers[0].NodeAttestors[0].AWSIID); diff != "" {
		t.Errorf("aws_iid {} mismatch (-want +got):\n%s", diff)
	}
}

// TestParseAttestorsJSON reads both attestors, and the refusal of an
// unsupported aws_iid setting, in HCL's JSON syntax.
func TestParseAttestorsJSON(t *testing.T) {
	const src = `{
  "trust_domain": "example.org",
  "server": {
    "root": {
      "node_attestor": {
        "aws_iid": {"partition": "aws-cn"},
        "k8s_psat": {"cluster": {"prod": {"service_account_allow_list": ["spire:agent"]}}}
      }
    }
  }
}`
	f := mustParse(t, src, "/etc/arbor/topology.hcl.json")
	na := f.Servers[0].NodeAttestors
	if len(na) != 2 || na[0].AWSIID.Partition != "aws-cn" || na[1].K8sPSAT.Clusters[0].ServiceAccountAllowList[0] != "spire:agent" {
		t.Errorf("Parse(json) attestors = %+v", na)
	}
	_, diags := Parse([]byte(`{"trust_domain": "example.org", "server": {"a": {"node_attestor": {"aws_iid": {"verify_organization": {"management_account_id": "1"}}}}}}`), "t.json")
	if len(diags) != 1 || diags[0].Summary != "Unsupported aws_iid setting" || diags[0].Subject == nil {
		t.Errorf("Parse(json with verify_organization) = %v, want one Unsupported aws_iid setting", diags)
	}
}

func TestNodeAttestorErrors(t *testing.T) {
	const td = "trust_domain = \"example.org\"\n"
	aws := func(body string) string {
		return td + "server \"a\" {\n  node_attestor \"aws_iid\" {\n" + body + "\n  }\n}\n"
	}
	cluster := func(body string) string {
		return td + "server \"a\" {\n  node_attestor \"k8s_psat\" {\n    cluster \"prod\" {\n" + body + "\n    }\n  }\n}\n"
	}
	gcp := func(body string) string {
		return td + "server \"a\" {\n  node_attestor \"gcp_iit\" {\n" + body + "\n  }\n}\n"
	}
	azure := func(body string) string {
		return td + "server \"a\" {\n  node_attestor \"azure_msi\" {\n" + body + "\n  }\n}\n"
	}
	const tenant = `    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {`
	tests := []struct {
		name       string
		src        string
		want       []diagAt
		wantDetail string // a fragment of the first diagnostic's detail
	}{
		{
			name: "misspelt attestor kind",
			src:  td + "server \"a\" {\n  node_attestor \"aws-iid\" {}\n}\n",
			want: []diagAt{{"3:17", "Unknown node attestor kind"}}, wantDetail: `Did you mean "aws_iid"?`,
		},
		{
			name: "misspelt agent attestor kind",
			src:  treeSrc(k8sRoot, `    node_attestor "k8s-psat" {}`),
			want: []diagAt{{"18:19", "Unknown node attestor kind"}}, wantDetail: `Did you mean "k8s_psat"?`,
		},
		{
			name: "gcp_iit without projects",
			src:  gcp(`    use_instance_metadata = true`),
			want: []diagAt{{"3:27", "Missing required argument"}},
		},
		{
			name: "gcp_iit empty project list",
			src:  gcp(`    projectid_allow_list = []`),
			want: []diagAt{{"4:28", "No projects"}},
		},
		{
			name: "gcp_iit project number",
			src:  gcp(`    projectid_allow_list = ["ok-project", "123456789012"]`),
			want: []diagAt{{"4:43", "Invalid project ID"}}, wantDetail: "not its name or number",
		},
		{
			name: "gcp_iit label keys without instance metadata",
			src:  gcp("    projectid_allow_list = [\"ok-project\"]\n    allowed_label_keys = [\"env\"]"),
			want: []diagAt{{"5:5", "Needs use_instance_metadata"}},
		},
		{
			name: "gcp_iit key with a colon",
			src:  gcp("    projectid_allow_list = [\"ok-project\"]\n    use_instance_metadata = true\n    allowed_metadata_keys = [\"a:b\"]"),
			want: []diagAt{{"6:30", "Invalid key"}},
		},
		{
			name: "gcp_iit metadata size",
			src:  gcp("    projectid_allow_list = [\"ok-project\"]\n    max_metadata_value_size = 0"),
			want: []diagAt{{"5:31", "Invalid metadata value size"}},
		},
		{
			name: "azure_msi without tenants",
			src:  azure(`    agent_path_template = "x/{{ .TenantID }}"`),
			want: []diagAt{{"3:3", "No Azure tenants"}},
		},
		{
			name: "azure_msi tenant not a GUID",
			src:  azure("    tenant \"contoso.onmicrosoft.com\" {\n      subscription_id = \"11111111-1111-1111-1111-111111111111\"\n    }"),
			want: []diagAt{{"4:12", "Invalid tenant ID"}},
		},
		{
			name: "azure_msi duplicate tenant",
			src: azure(tenant + "\n      subscription_id = \"11111111-1111-1111-1111-111111111111\"\n    }\n" +
				tenant + "\n      subscription_id = \"11111111-1111-1111-1111-111111111111\"\n    }"),
			want: []diagAt{{"7:12", "Duplicate tenant"}}, wantDetail: "line 4",
		},
		{
			name: "azure_msi tenant without subscription",
			src:  azure(tenant + "\n      resource_id = \"api://arbor\"\n    }"),
			want: []diagAt{{"4:5", "No subscription"}},
		},
		{
			name: "azure_msi bad subscription",
			src:  azure(tenant + "\n      subscription_ids = [\"11111111-1111-1111-1111-111111111111\", \"prod\"]\n    }"),
			want: []diagAt{{"5:67", "Invalid subscription ID"}},
		},
		{
			name: "azure_msi app id without secret",
			src:  azure(tenant + "\n      subscription_id = \"11111111-1111-1111-1111-111111111111\"\n      app_id = \"x\"\n    }"),
			want: []diagAt{{"6:7", "Azure app ID without its secret"}},
		},
		{
			name: "aws_iid unknown attribute",
			src:  aws(`    acess_key_id = "AKIA"`),
			want: []diagAt{{"4:5", "Unsupported argument"}}, wantDetail: `Did you mean "access_key_id"?`,
		},
		{
			name: "aws_iid verify_organization",
			src:  aws(`    verify_organization = { management_account_id = "123456789012", assume_org_role = "r" }`),
			want: []diagAt{{"4:5", "Unsupported aws_iid setting"}}, wantDetail: "not supported by arbor's aws_iid attestor",
		},
		{
			name: "aws_iid validate_eks_cluster_membership as a block",
			src:  aws("    validate_eks_cluster_membership {\n      eks_cluster_names = [\"prod\"]\n    }"),
			want: []diagAt{{"4:5", "Unsupported aws_iid setting"}}, wantDetail: `node_attestor "k8s_psat"`,
		},
		{
			name: "aws_iid access key without secret",
			src:  aws(`    access_key_id = "AKIA"`),
			want: []diagAt{{"4:5", "AWS access key without its secret"}}, wantDetail: `env("AWS_SECRET_ACCESS_KEY")`,
		},
		{
			name: "aws_iid secret without access key",
			src:  aws(`    secret_access_key = "do-not-print"`),
			want: []diagAt{{"4:5", "AWS secret key without its access key ID"}},
		},
		{
			name: "aws_iid bad partition",
			src:  aws(`    partition = "aws-usgov"`),
			want: []diagAt{{"4:17", "Invalid partition"}}, wantDetail: `Did you mean "aws-us-gov"?`,
		},
		{
			name: "aws_iid bad account ID at its element",
			src:  aws(`    account_ids_for_local_validation = ["123456789012", "1234"]`),
			want: []diagAt{{"4:57", "Invalid AWS account ID"}}, wantDetail: `"1234"`,
		},
		{
			name: "aws_iid role ARN in assume_role",
			src:  aws(`    assume_role = "arn:aws:iam::123456789012:role/spire"`),
			want: []diagAt{{"4:19", "Role ARN in assume_role"}}, wantDetail: `assume_role = "spire"`,
		},
		{
			name: "aws_iid bad role name",
			src:  aws(`    assume_role = "spire server"`),
			want: []diagAt{{"4:19", "Invalid IAM role name"}},
		},
		{
			name: "aws_iid bad template",
			src:  aws(`    agent_path_template = "{{ .AccountID "`),
			want: []diagAt{{"4:27", "Invalid agent path template"}}, wantDetail: "aws_iid/<account>/<region>/<instance>",
		},
		{
			name: "aws_iid template with an unknown function",
			src:  aws(`    agent_path_template = "{{ .AccountID | shout }}"`),
			want: []diagAt{{"4:27", "Invalid agent path template"}}, wantDetail: `"shout" not defined`,
		},
		{
			name: "aws_iid no identity certificates",
			src:  aws(`    identity_certificate_paths = []`),
			want: []diagAt{{"4:34", "No identity certificates"}},
		},
		{
			name: "aws_iid bad EC2 endpoint",
			src:  aws(`    ec2_endpoint = "ec2.internal"`),
			want: []diagAt{{"4:20", "Invalid URL"}},
		},
		{
			name: "aws_iid wrong type",
			src:  aws(`    skip_block_device = "yes"`),
			want: []diagAt{{"4:25", "Wrong value type"}},
		},
		{
			name: "k8s_psat without clusters",
			src:  td + "server \"a\" {\n  node_attestor \"k8s_psat\" {}\n}\n",
			want: []diagAt{{"3:3", "No Kubernetes clusters"}}, wantDetail: `cluster "prod"`,
		},
		{
			name: "k8s_psat clusters as SPIRE writes them",
			src:  td + "server \"a\" {\n  node_attestor \"k8s_psat\" {\n    clusters = {}\n  }\n}\n",
			want: []diagAt{{"3:3", "No Kubernetes clusters"}, {"4:5", "Unsupported argument"}},
		},
		{
			name: "k8s_psat duplicate cluster",
			src:  td + "server \"a\" {\n  node_attestor \"k8s_psat\" {\n    cluster \"prod\" {\n      service_account_allow_list = [\"a:b\"]\n    }\n    cluster \"prod\" {\n      service_account_allow_list = [\"c:d\"]\n    }\n  }\n}\n",
			want: []diagAt{{"7:13", "Duplicate cluster"}}, wantDetail: "line 4",
		},
		{
			name: "k8s_psat invalid cluster name",
			src:  td + "server \"a\" {\n  node_attestor \"k8s_psat\" {\n    cluster \"eu/prod\" {\n      service_account_allow_list = [\"a:b\"]\n    }\n  }\n}\n",
			want: []diagAt{{"4:13", "Invalid cluster name"}},
		},
		{
			name: "k8s_psat missing service accounts",
			src:  cluster(`      audience = ["spire-server"]`),
			want: []diagAt{{"4:20", "Missing required argument"}}, wantDetail: "service_account_allow_list",
		},
		{
			name: "k8s_psat empty service accounts",
			src:  cluster(`      service_account_allow_list = []`),
			want: []diagAt{{"5:36", "No service accounts"}},
		},
		{
			name: "k8s_psat service account without namespace",
			src:  cluster(`      service_account_allow_list = ["spire:spire-agent", "spire-agent"]`),
			want: []diagAt{{"5:58", "Invalid service account"}}, wantDetail: "no ':' between the namespace and the name",
		},
		{
			name: "k8s_psat service account with a bad name",
			src:  cluster(`      service_account_allow_list = ["Spire:agent"]`),
			want: []diagAt{{"5:37", "Invalid service account"}}, wantDetail: `"Spire" is not a namespace name`,
		},
		{
			name: "k8s_psat unknown cluster attribute",
			src:  cluster("      service_account_allow_list = [\"a:b\"]\n      audiences = [\"x\"]"),
			want: []diagAt{{"6:7", "Unsupported argument"}}, wantDetail: `Did you mean "audience"?`,
		},
		{
			name: "k8s_psat empty audience",
			src:  cluster("      service_account_allow_list = [\"a:b\"]\n      audience = [\"\"]"),
			want: []diagAt{{"6:19", "Empty audience"}},
		},
		{
			name: "k8s_psat bad label key",
			src:  cluster("      service_account_allow_list = [\"a:b\"]\n      allowed_pod_label_keys = [\"app\", \"-bad\"]"),
			want: []diagAt{{"6:40", "Invalid label key"}},
		},
		{
			name: "agent k8s_psat without cluster",
			src:  treeSrc(k8sRoot, `    node_attestor "k8s_psat" {}`),
			want: []diagAt{{"18:30", "Missing required argument"}}, wantDetail: `"cluster" is required`,
		},
		{
			name: "agent cluster unknown to the parent",
			src:  treeSrc(k8sRoot, "    node_attestor \"k8s_psat\" {\n      cluster = \"prd\"\n    }"),
			want: []diagAt{{"19:17", "Unknown Kubernetes cluster"}}, wantDetail: `Did you mean "prod"? Clusters "root" accepts: prod, staging.`,
		},
		{
			name: "agent k8s_psat the parent does not accept",
			src:  treeSrc(`  node_attestor "x509pop" { ca_bundle_paths = ["ca.pem"] }`, "    node_attestor \"k8s_psat\" {\n      cluster = \"prod\"\n    }"),
			want: []diagAt{{"11:19", "Parent does not accept the agent's attestor"}}, wantDetail: `"root" accepts only x509pop`,
		},
		{
			name: "agent aws_iid the parent does not accept",
			src:  treeSrc(k8sRoot, `    node_attestor "aws_iid" {}`),
			want: []diagAt{{"18:19", "Parent does not accept the agent's attestor"}}, wantDetail: `Add node_attestor "aws_iid" { ... } to server "root"`,
		},
		{
			name: "agent aws_iid bad metadata endpoint",
			src:  treeSrc(`  node_attestor "aws_iid" {}`, "    node_attestor \"aws_iid\" {\n      ec2_metadata_endpoint = \"169.254.169.254\"\n    }"),
			want: []diagAt{{"12:31", "Invalid URL"}},
		},
		{
			name: "agent aws_iid unknown attribute",
			src:  treeSrc(`  node_attestor "aws_iid" {}`, "    node_attestor \"aws_iid\" {\n      ec2_metadata_endpont = \"http://169.254.169.254\"\n    }"),
			want: []diagAt{{"12:7", "Unsupported argument"}}, wantDetail: `Did you mean "ec2_metadata_endpoint"?`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, diags := Parse([]byte(tt.src), testPath)
			if f != nil {
				t.Errorf("Parse() returned a File with errors")
			}
			var got []diagAt
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					continue
				}
				if d.Subject == nil || d.Subject.Filename != testPath || d.Detail == "" {
					t.Errorf("diagnostic %q has no position in %s or no detail: %+v", d.Summary, testPath, d.Subject)
					continue
				}
				got = append(got, diagAt{fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column), d.Summary})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Parse() diagnostics mismatch (-want +got):\n%s\nsource:\n%s\nall:\n%s", diff, tt.src, FormatDiagnostics(diags, nil))
			}
			if tt.wantDetail != "" && !strings.Contains(diags[0].Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", diags[0].Detail, tt.wantDetail)
			}
			if out := FormatDiagnostics(diags, nil); strings.Contains(out, "do-not-print") {
				t.Errorf("a diagnostic prints the secret access key:\n%s", out)
			}
		})
	}
}

// TestAWSIIDSecretNotRendered: the secret access key, read with env() as
// other secrets are, reaches File but no rendered output.
func TestAWSIIDSecretNotRendered(t *testing.T) {
	const secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
	src := treeSrc(`  node_attestor "aws_iid" {
    access_key_id     = "AKIAIOSFODNN7EXAMPLE"
    secret_access_key = env("ARBOR_TEST_AWS_SECRET")
  }`, `    node_attestor "aws_iid" {}`)
	f, diags := ParseWith([]byte(src), testPath, Options{LookupEnv: envOf("ARBOR_TEST_AWS_SECRET", secret)})
	if len(diags) > 0 {
		t.Fatalf("ParseWith():\n%s", FormatDiagnostics(diags, nil))
	}
	if got := f.Servers[0].NodeAttestors[0].AWSIID.SecretAccessKey; got != secret {
		t.Fatalf("SecretAccessKey = %q, want the env() value", got)
	}
	cfg, err := Render(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	var h, j bytes.Buffer
	if err := cfg.WriteHCL(&h); err != nil {
		t.Fatal(err)
	}
	if err := cfg.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	spire, err := RenderSPIRE(f, "root")
	if err != nil {
		t.Fatal(err)
	}
	var sc bytes.Buffer
	if err := spire.WriteServerConf(&sc); err != nil {
		t.Fatal(err)
	}
	for what, out := range map[string]string{"render": h.String(), "render --format json": j.String(), "server.conf": sc.String()} {
		if strings.Contains(out, secret) {
			t.Errorf("%s prints the secret access key:\n%s", what, out)
		}
		if !strings.Contains(out, "AKIAIOSFODNN7EXAMPLE") {
			t.Errorf("%s lacks the access key ID:\n%s", what, out)
		}
	}
	if !strings.Contains(h.String(), `secret_access_key                  = "`+SecretNotRendered+`"`) {
		t.Errorf("render does not say a secret access key is set:\n%s", h.String())
	}
	if !strings.Contains(sc.String(), "# aws_iid: secret_access_key is a secret and is not written here: start spire-server with AWS_SECRET_ACCESS_KEY") {
		t.Errorf("server.conf does not say where the secret goes:\n%s", sc.String())
	}
}

// TestRenderAttestorsHCLAndJSONAgree: the cluster blocks of k8s_psat and
// every aws_iid attribute come out the same in both renderings.
func TestRenderAttestorsHCLAndJSONAgree(t *testing.T) {
	f, diags := ParseFile(filepath.Join("testdata", "spire", "cloud-attestors.hcl"))
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	for _, node := range []string{"root", "eks", "ec2", "gce", "azure"} {
		cfg, err := Render(f, node)
		if err != nil {
			t.Fatal(err)
		}
		var h, j bytes.Buffer
		if err := cfg.WriteHCL(&h); err != nil {
			t.Fatal(err)
		}
		if err := cfg.WriteJSON(&j); err != nil {
			t.Fatal(err)
		}
		fromHCL, diags := parseHCLOrJSON(h.Bytes(), "r.hcl")
		if diags.HasErrors() {
			t.Fatalf("rendered HCL of %s does not parse: %v", node, diags)
		}
		fromJSON, diags := parseHCLOrJSON(j.Bytes(), "r.json")
		if diags.HasErrors() {
			t.Fatalf("rendered JSON of %s does not parse: %v", node, diags)
		}
		if diff := cmp.Diff(fromHCL, fromJSON); diff != "" {
			t.Errorf("HCL and JSON renderings of %s differ (-hcl +json):\n%s", node, diff)
		}
		want := map[string]string{
			"root":  "server[root].node_attestor[k8s_psat].cluster[eks-prod].service_account_allow_list",
			"eks":   "agent[].node_attestor[k8s_psat].token_path",
			"ec2":   "agent[].node_attestor[aws_iid].ec2_metadata_endpoint",
			"gce":   "agent[].node_attestor[gcp_iit].service_account",
			"azure": "agent[].node_attestor[azure_msi].resource_id",
		}[node]
		if _, ok := fromHCL[want]; !ok {
			t.Errorf("render of %s lacks %s; has %v", node, want, fromHCL)
		}
	}
}

// TestAgentPathTemplateFunctions: a template calling the sprig functions
// the x509pop and aws_iid attestors offer (as SPIRE's do) is accepted, one
// calling another function is not.
func TestAgentPathTemplateFunctions(t *testing.T) {
	for _, tt := range []struct {
		kind, tmpl string
		ok         bool
	}{
		{"x509pop", `x509pop/{{ .Subject.CommonName | lower | trimSuffix ".example.org" }}`, true},
		{"aws_iid", `/{{ .PluginName }}/{{ .Tags.env | upper }}/{{ .InstanceID | sha256sum }}`, true},
		{"x509pop", `x509pop/{{ .Subject.CommonName | title }}`, false},
	} {
		extra := ""
		if tt.kind == "x509pop" {
			extra = "    ca_bundle_paths = [\"ca.pem\"]\n"
		}
		src := fmt.Sprintf("trust_domain = \"example.org\"\nserver \"a\" {\n  node_attestor %q {\n%s    agent_path_template = %q\n  }\n}\n", tt.kind, extra, tt.tmpl)
		_, diags := Parse([]byte(src), testPath)
		if got := !diags.HasErrors(); got != tt.ok {
			t.Errorf("%s agent_path_template %q accepted = %v, want %v:\n%s", tt.kind, tt.tmpl, got, tt.ok, FormatDiagnostics(diags, nil))
		}
	}
}

// TestSimulateAWSIIDAgentNeedsEviction: an aws_iid agent attests once per
// instance, so a parent outage past its SVID's lifetime leaves it cut off
// until it is evicted, as a join-token agent is until it gets a new token;
// a k8s_psat agent attests again by itself.
func TestSimulateAWSIIDAgentNeedsEviction(t *testing.T) {
	f, diags := ParseFile(filepath.Join("testdata", "spire", "cloud-attestors.hcl"))
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(diags, nil))
	}
	sim, err := Simulate(f, "root", 30*24*time.Hour, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, e := range append(sim.Events, sim.Later...) {
		if e.Kind == EventParentAgent || e.Kind == EventManualAction {
			kinds[e.Server] = e.Kind
		}
	}
	if kinds["ec2"] != EventManualAction || kinds["eks"] != EventParentAgent {
		t.Errorf("co-located agent events = %v, want ec2 (aws_iid) %s and eks (k8s_psat) %s", kinds, EventManualAction, EventParentAgent)
	}
	if !sim.NeedsAction {
		t.Errorf("Simulate(root).NeedsAction = false, want true: the aws_iid agent must be evicted")
	}
}
