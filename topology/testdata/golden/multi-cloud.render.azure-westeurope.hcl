# Configuration of "azure-westeurope" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "azure-westeurope" {
  parent         = "root"
  parent_address = "root.example.org:8081"
  host           = "arbor.westeurope.azure.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "arbor.westeurope.azure.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/azure-westeurope/admin.sock"
  health_listen  = "0.0.0.0:8080"
  state_dir      = "../examples/.arbor/multi-cloud/azure-westeurope"
  spiffe_id      = "spiffe://example.org/arbor/server/azure-westeurope"
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
    path = "../examples/.arbor/multi-cloud/azure-westeurope/datastore.sqlite3"
  }

  node_attestor "k8s_psat" {
    cluster "aks-westeurope-1" {
      service_account_allow_list = ["arbor:arbor-agent"]
      audience                   = ["spire-server"]
      kube_config_file           = "/etc/arbor/kube/aks-westeurope-1.yaml"
      allowed_node_label_keys    = []
      allowed_pod_label_keys     = []
    }
  }
}

agent {
  server_address   = "root.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/azure-westeurope"
  socket_path      = "../examples/.arbor/multi-cloud/azure-westeurope/agent.sock"
  data_dir         = "../examples/.arbor/multi-cloud/azure-westeurope/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "azure_msi" {
    resource_id = "api://arbor-root"
  }
}

entry "downstream-azure-westeurope-1" {
  spiffe_id      = "spiffe://example.org/arbor/server/azure-westeurope-1"
  parent_id      = "spiffe://example.org/arbor/agent/azure-westeurope-1"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server azure-westeurope-1"
}
