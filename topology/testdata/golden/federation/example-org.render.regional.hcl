# Configuration of "regional" rendered by `arbor topology render` from ../examples/federation/example-org.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "regional" {
  parent         = "root"
  parent_address = "127.0.0.1:8101"
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8102"
  address        = "127.0.0.1:8102"
  admin_socket   = "../examples/federation/.arbor/example-org/regional/admin.sock"
  health_listen  = "127.0.0.1:8112"
  state_dir      = "../examples/federation/.arbor/example-org/regional"
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
    path = "../examples/federation/.arbor/example-org/regional/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "127.0.0.1:8101"
  spiffe_id        = "spiffe://example.org/arbor/agent/regional"
  socket_path      = "../examples/federation/.arbor/example-org/regional/agent.sock"
  data_dir         = "../examples/federation/.arbor/example-org/regional/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "join_token" {}
}

entry "downstream-leaf" {
  spiffe_id      = "spiffe://example.org/arbor/server/leaf"
  parent_id      = "spiffe://example.org/arbor/agent/leaf"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server leaf"
}

federation "partner.example" {
  bundle_endpoint    = "https://127.0.0.1:8221"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
  fetched_by         = "root"
}
