# Configuration of "leaf" rendered by `arbor topology render` from ../examples/federation/partner.hcl.
# Generated: edit the topology file instead.

trust_domain = "partner.example"

server "leaf" {
  parent         = "root"
  parent_address = "127.0.0.1:8201"
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8202"
  address        = "127.0.0.1:8202"
  admin_socket   = "../examples/federation/.arbor/partner/leaf/admin.sock"
  health_listen  = "127.0.0.1:8212"
  state_dir      = "../examples/federation/.arbor/partner/leaf"
  spiffe_id      = "spiffe://partner.example/arbor/server/leaf"
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
    path = "../examples/federation/.arbor/partner/leaf/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "127.0.0.1:8201"
  spiffe_id        = "spiffe://partner.example/arbor/agent/leaf"
  socket_path      = "../examples/federation/.arbor/partner/leaf/agent.sock"
  data_dir         = "../examples/federation/.arbor/partner/leaf/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "join_token" {}
}

federation "example.org" {
  bundle_endpoint    = "https://127.0.0.1:8121"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://example.org/spire/server"
  fetched_by         = "root"
}
