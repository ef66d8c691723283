# vault-missing-auth.hcl: a vault upstream without an auth block.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
  upstream "vault" {
    address = "https://vault.example.org:8200"
  }
}
