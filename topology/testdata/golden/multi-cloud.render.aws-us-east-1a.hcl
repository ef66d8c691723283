# Configuration of "aws-us-east-1a" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "aws-us-east-1a" {
  parent         = "aws-us-east-1"
  parent_address = "arbor.us-east-1.aws.example.org:8081"
  host           = "arbor.us-east-1a.aws.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "arbor.us-east-1a.aws.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/aws-us-east-1a/admin.sock"
  health_listen  = "0.0.0.0:8080"
  state_dir      = "../examples/.arbor/multi-cloud/aws-us-east-1a"
  spiffe_id      = "spiffe://example.org/arbor/server/aws-us-east-1a"
  ca_ttl         = "7d"
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
    path = "../examples/.arbor/multi-cloud/aws-us-east-1a/datastore.sqlite3"
  }

  node_attestor "k8s_psat" {
    cluster "eks-us-east-1a" {
      service_account_allow_list = ["arbor:arbor-agent"]
      audience                   = ["spire-server"]
      allowed_node_label_keys    = []
      allowed_pod_label_keys     = []
    }
  }
}

agent {
  server_address   = "arbor.us-east-1.aws.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/aws-us-east-1a"
  socket_path      = "../examples/.arbor/multi-cloud/aws-us-east-1a/agent.sock"
  data_dir         = "../examples/.arbor/multi-cloud/aws-us-east-1a/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "k8s_psat" {
    cluster    = "eks-us-east-1a"
    token_path = "/var/run/secrets/tokens/spire-agent"
  }

  workload_attestor "k8s" {
    skip_kubelet_verification    = false
    use_anonymous_authentication = false
    disable_container_selectors  = false
  }
}

entry "checkout" {
  spiffe_id      = "spiffe://example.org/aws/checkout"
  parent_id      = "spiffe://example.org/nodes/aws-us-east-1a"
  selectors      = ["unix:user:checkout"]
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = ["checkout.us-east-1a.example.org"]
  admin          = false
  downstream     = false
  federates_with = []
  hint           = ""
}
