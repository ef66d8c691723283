# Configuration of "azure-westeurope-1" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "azure-westeurope-1" {
  parent         = "azure-westeurope"
  parent_address = "arbor.westeurope.azure.example.org:8081"
  host           = "arbor.westeurope-1.azure.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "arbor.westeurope-1.azure.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/azure-westeurope-1/admin.sock"
  health_listen  = "0.0.0.0:8080"
  state_dir      = "../examples/.arbor/multi-cloud/azure-westeurope-1"
  spiffe_id      = "spiffe://example.org/arbor/server/azure-westeurope-1"
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
    path = "../examples/.arbor/multi-cloud/azure-westeurope-1/datastore.sqlite3"
  }

  node_attestor "k8s_psat" {
    cluster "aks-westeurope-1" {
      service_account_allow_list = ["arbor:arbor-agent"]
      audience                   = ["spire-server"]
      allowed_node_label_keys    = []
      allowed_pod_label_keys     = []
    }
  }
}

agent {
  server_address   = "arbor.westeurope.azure.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/azure-westeurope-1"
  socket_path      = "../examples/.arbor/multi-cloud/azure-westeurope-1/agent.sock"
  data_dir         = "../examples/.arbor/multi-cloud/azure-westeurope-1/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "k8s_psat" {
    cluster    = "aks-westeurope-1"
    token_path = "/var/run/secrets/tokens/spire-agent"
  }

  workload_attestor "k8s" {
    skip_kubelet_verification    = false
    use_anonymous_authentication = false
    disable_container_selectors  = false
  }
}
