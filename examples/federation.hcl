# federation.hcl — one root that trusts two other trust domains: workloads
# of example.org can authenticate workloads of partner.example and
# payments.example, as the entries with federates_with say.
#
#   arbor topology validate examples/federation.hcl
#   arbor topology render examples/federation.hcl --node root --format json

trust_domain = "example.org"

server "root" {
  listen        = "127.0.0.1:8091"
  health_listen = "127.0.0.1:8090"
  ca_ttl        = "24h"
  state_dir     = ".arbor/federation-root"

  # The web frontend may call services of partner.example.
  entry "web" {
    spiffe_id      = "spiffe://example.org/web"
    parent_id      = "spiffe://example.org/host"
    selectors      = ["unix:uid:1000"]
    federates_with = ["partner.example"]
  }

  entry "billing" {
    spiffe_id      = "spiffe://example.org/billing"
    parent_id      = "spiffe://example.org/host"
    selectors      = ["unix:uid:1001"]
    federates_with = ["partner.example", "payments.example"]
  }
}

# partner.example serves its bundle with a SPIFFE-authenticated endpoint
# (like a SPIRE server's federation endpoint).
federation "partner.example" {
  bundle_endpoint    = "https://spire.partner.example:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
}

# payments.example publishes its bundle behind a Web PKI certificate.
federation "payments.example" {
  bundle_endpoint = "https://bundle.payments.example/example.org"
}
