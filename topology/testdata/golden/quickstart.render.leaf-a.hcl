# Configuration of "leaf-a" rendered by `arbor topology render` from ../examples/quickstart.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "leaf-a" {
  parent         = "regional"
  parent_address = "127.0.0.1:8082"
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8083"
  address        = "127.0.0.1:8083"
  admin_socket   = "../examples/.arbor/quickstart/leaf-a/admin.sock"
  health_listen  = "127.0.0.1:8093"
  state_dir      = "../examples/.arbor/quickstart/leaf-a"
  spiffe_id      = "spiffe://example.org/arbor/server/leaf-a"
  ca_ttl         = "12h"
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
    path = "../examples/.arbor/quickstart/leaf-a/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "127.0.0.1:8082"
  spiffe_id        = "spiffe://example.org/arbor/agent/leaf-a"
  socket_path      = "../examples/.arbor/quickstart/leaf-a/agent.sock"
  data_dir         = "../examples/.arbor/quickstart/leaf-a/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "join_token" {}
}
