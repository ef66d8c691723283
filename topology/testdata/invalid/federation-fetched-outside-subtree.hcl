# federation-fetched-outside-subtree.hcl: an entry federates with a trust
# domain fetched by a server it is not below, so it never gets the bundle.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}

server "eu" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "x509pop" {
      private_key_path = "k.pem"
      certificate_path = "c.pem"
    }
  }
}

server "us" {
  parent        = "root"
  listen        = "127.0.0.1:8083"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "x509pop" {
      private_key_path = "k.pem"
      certificate_path = "c.pem"
    }
  }
  entry "billing" {
    spiffe_id      = "spiffe://example.org/billing"
    parent_id      = "spiffe://example.org/host"
    selectors      = ["unix:uid:1001"]
    federates_with = ["partner.example"]
  }
}

federation "partner.example" {
  bundle_endpoint = "https://partner.example/bundle"
  fetched_by      = "eu"
}
