# Configuration of "regional" rendered by `arbor topology render` from ../examples/quickstart.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "regional" {
  parent         = "root"
  parent_address = "127.0.0.1:8081"
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8082"
  address        = "127.0.0.1:8082"
  admin_socket   = "../examples/.arbor/quickstart/regional/admin.sock"
  health_listen  = "127.0.0.1:8092"
  state_dir      = "../examples/.arbor/quickstart/regional"
  spiffe_id      = "spiffe://example.org/arbor/server/regional"
  ca_ttl         = "24h"
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
    path = "../examples/.arbor/quickstart/regional/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "127.0.0.1:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/regional"
  socket_path      = "../examples/.arbor/quickstart/regional/agent.sock"
  data_dir         = "../examples/.arbor/quickstart/regional/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "join_token" {}
}

entry "downstream-leaf-a" {
  spiffe_id      = "spiffe://example.org/arbor/server/leaf-a"
  parent_id      = "spiffe://example.org/arbor/agent/leaf-a"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server leaf-a"
}

entry "downstream-leaf-b" {
  spiffe_id      = "spiffe://example.org/arbor/server/leaf-b"
  parent_id      = "spiffe://example.org/arbor/agent/leaf-b"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server leaf-b"
}
