# two-roots.hcl: two servers without a parent.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}

server "other" {
  listen        = "127.0.0.1:8082"
  health_listen = "off"
}
