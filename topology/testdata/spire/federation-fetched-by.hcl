# federation-fetched-by.hcl: a regional fetches partner.example's bundle
# (fetched_by) while the root fetches payments.example's; the leaf below
# the regional federates with partner.example.
trust_domain = "example.org"

server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "48h"
}

server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  address       = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "24h"
}

server "leaf" {
  parent        = "regional"
  listen        = "127.0.0.1:8083"
  address       = "127.0.0.1:8083"
  health_listen = "off"
  ca_ttl        = "12h"
  entry "billing" {
    spiffe_id      = "spiffe://example.org/billing"
    parent_id      = "spiffe://example.org/host"
    selectors      = ["unix:uid:1001"]
    federates_with = ["partner.example"]
  }
}

federation "partner.example" {
  bundle_endpoint    = "https://spire.partner.example:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
  fetched_by         = "regional"
}

federation "payments.example" {
  bundle_endpoint = "https://bundle.payments.example/example.org"
}
