# federation-endpoint-credentials.hcl: a bundle endpoint URL with a password.
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
  bundle_endpoint = "https://bundle:s3cret@partner.example/bundle"
}
