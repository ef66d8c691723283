# variable-not-set.hcl: a variable with no default and no value.
trust_domain = "example.org"

variable "region_ttl" {}
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = var.region_ttl
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}
