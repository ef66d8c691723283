# partner.hcl — partner.example, the second trust domain of the federation
# example: a root and a leaf, federated with example.org (example-org.hcl
# beside it) over both roots' SPIFFE bundle endpoints.
#
#   arbor up examples/federation/example-org.hcl examples/federation/partner.hcl
#
# See example-org.hcl for what arbor up does with the two files and what the
# demo workloads show.

trust_domain = "partner.example"

defaults {
  x509_svid_ttl = "1h"
  jwt_svid_ttl  = "5m"
  key_type      = "ec-p256"
}

server "root" {
  listen        = "127.0.0.1:8201"
  health_listen = "127.0.0.1:8211"
  state_dir     = ".arbor/partner/root"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {}

  bundle_endpoint {
    listen       = "127.0.0.1:8221"
    profile      = "https_spiffe"
    refresh_hint = "1m"
  }
}

server "leaf" {
  parent        = "root"
  listen        = "127.0.0.1:8202"
  health_listen = "127.0.0.1:8212"
  state_dir     = ".arbor/partner/leaf"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

federation "example.org" {
  bundle_endpoint    = "https://127.0.0.1:8121"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://example.org/spire/server"
}
