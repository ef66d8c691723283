# federation-missing-endpoint-id.hcl: an https_spiffe federation without endpoint_spiffe_id.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}

federation "partner.example" {
  bundle_endpoint = "https://partner.example/bundle"
  profile         = "https_spiffe"
}
