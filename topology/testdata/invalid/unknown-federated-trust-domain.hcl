# unknown-federated-trust-domain.hcl: federates_with naming an undeclared trust domain.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }

  entry "web" {
    spiffe_id      = "spiffe://example.org/web"
    parent_id      = "spiffe://example.org/host"
    selectors      = ["unix:uid:1000"]
    federates_with = ["partner.example"]
  }
}
