# Configuration of "gcp-europe-west1-b" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "gcp-europe-west1-b" {
  parent         = "gcp-europe-west1"
  parent_address = "arbor.europe-west1.gcp.example.org:8081"
  host           = "arbor.europe-west1-b.gcp.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "arbor.europe-west1-b.gcp.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/gcp-europe-west1-b/admin.sock"
  health_listen  = "0.0.0.0:8080"
  state_dir      = "../examples/.arbor/multi-cloud/gcp-europe-west1-b"
  spiffe_id      = "spiffe://example.org/arbor/server/gcp-europe-west1-b"
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
    path = "../examples/.arbor/multi-cloud/gcp-europe-west1-b/datastore.sqlite3"
  }

  node_attestor "k8s_psat" {
    cluster "gke-europe-west1-b" {
      service_account_allow_list = ["arbor:arbor-agent"]
      audience                   = ["spire-server"]
      allowed_node_label_keys    = []
      allowed_pod_label_keys     = []
    }
  }
}

agent {
  server_address   = "arbor.europe-west1.gcp.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/gcp-europe-west1-b"
  socket_path      = "../examples/.arbor/multi-cloud/gcp-europe-west1-b/agent.sock"
  data_dir         = "../examples/.arbor/multi-cloud/gcp-europe-west1-b/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "k8s_psat" {
    cluster    = "gke-europe-west1-b"
    token_path = "/var/run/secrets/tokens/spire-agent"
  }

  workload_attestor "k8s" {
    skip_kubelet_verification    = false
    use_anonymous_authentication = false
    disable_container_selectors  = false
  }
}

entry "payments" {
  spiffe_id      = "spiffe://example.org/gcp/payments"
  parent_id      = "spiffe://example.org/nodes/gcp-europe-west1-b"
  selectors      = ["unix:user:payments"]
  x509_svid_ttl  = "30m"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = false
  federates_with = []
  hint           = ""
}
