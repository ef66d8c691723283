# Configuration of "root" rendered by `arbor topology render` from ../examples/federation.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "root" {
  host           = "local"
  replicas       = 1
  listen         = "127.0.0.1:8091"
  address        = "127.0.0.1:8091"
  admin_socket   = "../examples/.arbor/federation-root/admin.sock"
  health_listen  = "127.0.0.1:8090"
  state_dir      = "../examples/.arbor/federation-root"
  spiffe_id      = "spiffe://example.org/arbor/server/root"
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
    path = "../examples/.arbor/federation-root/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

entry "web" {
  spiffe_id      = "spiffe://example.org/web"
  parent_id      = "spiffe://example.org/host"
  selectors      = ["unix:uid:1000"]
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = false
  federates_with = ["partner.example"]
  hint           = ""
}

entry "billing" {
  spiffe_id      = "spiffe://example.org/billing"
  parent_id      = "spiffe://example.org/host"
  selectors      = ["unix:uid:1001"]
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = false
  federates_with = ["partner.example", "payments.example"]
  hint           = ""
}

federation "partner.example" {
  bundle_endpoint    = "https://spire.partner.example:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
  fetched_by         = "root"
}

federation "payments.example" {
  bundle_endpoint = "https://bundle.payments.example/example.org"
  profile         = "https_web"
  fetched_by      = "root"
}
