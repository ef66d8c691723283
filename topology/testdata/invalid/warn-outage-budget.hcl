# warn-outage-budget.hcl: a tier that cannot outlive its parent for the minimum budget (warning).
trust_domain = "example.org"
defaults {
  min_outage_budget = "1d"
}
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}

server "edge" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "12h"
  agent {
    node_attestor "x509pop" {
      private_key_path = "k.pem"
      certificate_path = "c.pem"
    }
  }
}
