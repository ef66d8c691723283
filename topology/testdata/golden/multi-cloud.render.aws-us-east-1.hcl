# Configuration of "aws-us-east-1" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "aws-us-east-1" {
  parent         = "root"
  parent_address = "root.example.org:8081"
  host           = "arbor.us-east-1.aws.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "arbor.us-east-1.aws.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/aws-us-east-1/admin.sock"
  health_listen  = "0.0.0.0:8080"
  state_dir      = "../examples/.arbor/multi-cloud/aws-us-east-1"
  spiffe_id      = "spiffe://example.org/arbor/server/aws-us-east-1"
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
    path = "../examples/.arbor/multi-cloud/aws-us-east-1/datastore.sqlite3"
  }

  node_attestor "k8s_psat" {
    cluster "eks-us-east-1a" {
      service_account_allow_list = ["arbor:arbor-agent"]
      audience                   = ["spire-server"]
      kube_config_file           = "/etc/arbor/kube/eks-us-east-1a.yaml"
      allowed_node_label_keys    = []
      allowed_pod_label_keys     = []
    }
  }
}

agent {
  server_address   = "root.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/aws-us-east-1"
  socket_path      = "../examples/.arbor/multi-cloud/aws-us-east-1/agent.sock"
  data_dir         = "../examples/.arbor/multi-cloud/aws-us-east-1/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "aws_iid" {}
}

entry "downstream-aws-us-east-1a" {
  spiffe_id      = "spiffe://example.org/arbor/server/aws-us-east-1a"
  parent_id      = "spiffe://example.org/arbor/agent/aws-us-east-1a"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server aws-us-east-1a"
}
