# Configuration of "root" rendered by `arbor topology render` from testdata/spire/cloud-attestors.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "root" {
  host           = "root.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "root.example.org:8081"
  admin_socket   = "testdata/spire/.arbor/cloud-attestors/root/admin.sock"
  health_listen  = "127.0.0.1:8080"
  state_dir      = "testdata/spire/.arbor/cloud-attestors/root"
  spiffe_id      = "spiffe://example.org/arbor/server/root"
  ca_ttl         = "30d"
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  agent_svid_ttl = "1h"
  key_type       = "ec-p256"
  jwt_key_type   = "ec-p256"
  ca_key_storage = "disk"
  log_level      = "info"
  log_format     = "text"
  jwt_issuer     = ""

  datastore "sqlite" {
    path = "testdata/spire/.arbor/cloud-attestors/root/datastore.sqlite3"
  }

  node_attestor "aws_iid" {
    access_key_id                      = "AKIAIOSFODNN7EXAMPLE"
    secret_access_key                  = "(not rendered)"
    assume_role                        = "spire-server-delegate"
    partition                          = "aws"
    skip_block_device                  = true
    disable_instance_profile_selectors = true
    account_ids_for_local_validation   = ["123456789012", "210987654321"]
    agent_path_template                = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Tags.role | lower }}/{{ .InstanceID }}"
    account_ids                        = ["123456789012"]
    identity_certificate_paths         = ["testdata/spire/aws/iid-rsa2048.pem"]
    ec2_endpoint                       = "https://ec2.private.example.org"
    iam_endpoint                       = "https://iam.private.example.org"
    sts_endpoint                       = "https://sts.private.example.org"
  }

  node_attestor "gcp_iit" {
    projectid_allow_list    = ["arbor-prod", "arbor-staging"]
    agent_path_template     = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceName }}"
    use_instance_metadata   = true
    allowed_label_keys      = ["env"]
    allowed_metadata_keys   = ["role"]
    max_metadata_value_size = 256
    service_account_file    = "testdata/spire/gcp/compute-reader.json"
    keys_url                = "https://keys.private.example.org/certs"
    compute_endpoint        = "https://compute.private.example.org/compute/v1/"
  }

  node_attestor "azure_msi" {
    agent_path_template = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"
    arm_endpoint        = "https://management.private.example.org/"

    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {
      resource_id      = "api://arbor-server"
      subscription_ids = ["11111111-1111-1111-1111-111111111111"]
      app_id           = "22222222-2222-2222-2222-222222222222"
      app_secret       = "(not rendered)"
    }

    tenant "33333333-3333-3333-3333-333333333333" {
      subscription_ids = ["44444444-4444-4444-4444-444444444444", "55555555-5555-5555-5555-555555555555"]
    }
  }

  node_attestor "k8s_psat" {
    cluster "eks-prod" {
      service_account_allow_list = ["spire:spire-agent", "arbor:agent"]
      audience                   = ["spire-server"]
      kube_config_file           = "testdata/spire/kube/eks-prod.yaml"
      allowed_node_label_keys    = ["topology.kubernetes.io/zone"]
      allowed_pod_label_keys     = ["app.kubernetes.io/name"]
    }

    cluster "on-prem" {
      service_account_allow_list = ["arbor:agent"]
      audience                   = []
      allowed_node_label_keys    = []
      allowed_pod_label_keys     = []
    }
  }
}

entry "downstream-ec2" {
  spiffe_id      = "spiffe://example.org/arbor/server/ec2"
  parent_id      = "spiffe://example.org/arbor/agent/ec2"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server ec2"
}

entry "downstream-eks" {
  spiffe_id      = "spiffe://example.org/arbor/server/eks"
  parent_id      = "spiffe://example.org/arbor/agent/eks"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server eks"
}

entry "downstream-gce" {
  spiffe_id      = "spiffe://example.org/arbor/server/gce"
  parent_id      = "spiffe://example.org/arbor/agent/gce"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server gce"
}

entry "downstream-azure" {
  spiffe_id      = "spiffe://example.org/arbor/server/azure"
  parent_id      = "spiffe://example.org/arbor/agent/azure"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server azure"
}
