# Configuration of "root" rendered by `arbor topology render` from ../examples/federation/partner.hcl.
# Generated: edit the topology file instead.

trust_domain = "partner.example"

server "root" {
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8201"
  address        = "127.0.0.1:8201"
  admin_socket   = "../examples/federation/.arbor/partner/root/admin.sock"
  health_listen  = "127.0.0.1:8211"
  state_dir      = "../examples/federation/.arbor/partner/root"
  spiffe_id      = "spiffe://partner.example/arbor/server/root"
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
    path = "../examples/federation/.arbor/partner/root/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }

  bundle_endpoint {
    listen       = "127.0.0.1:8221"
    profile      = "https_spiffe"
    refresh_hint = "1m"
  }
}

entry "downstream-leaf" {
  spiffe_id      = "spiffe://partner.example/arbor/server/leaf"
  parent_id      = "spiffe://partner.example/arbor/agent/leaf"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server leaf"
}

federation "example.org" {
  bundle_endpoint    = "https://127.0.0.1:8121"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://example.org/spire/server"
  fetched_by         = "root"
}
