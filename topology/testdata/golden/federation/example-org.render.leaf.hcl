# Configuration of "leaf" rendered by `arbor topology render` from ../examples/federation/example-org.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "leaf" {
  parent         = "regional"
  parent_address = "127.0.0.1:8102"
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8103"
  address        = "127.0.0.1:8103"
  admin_socket   = "../examples/federation/.arbor/example-org/leaf/admin.sock"
  health_listen  = "127.0.0.1:8113"
  state_dir      = "../examples/federation/.arbor/example-org/leaf"
  spiffe_id      = "spiffe://example.org/arbor/server/leaf"
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
    path = "../examples/federation/.arbor/example-org/leaf/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "127.0.0.1:8102"
  spiffe_id        = "spiffe://example.org/arbor/agent/leaf"
  socket_path      = "../examples/federation/.arbor/example-org/leaf/agent.sock"
  data_dir         = "../examples/federation/.arbor/example-org/leaf/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "join_token" {}
}

federation "partner.example" {
  bundle_endpoint    = "https://127.0.0.1:8221"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
  fetched_by         = "root"
}
