# bad-duration.hcl: a duration without a unit.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30 days"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}
