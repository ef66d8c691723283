# attribute-error-and-cross-block.hcl: one attribute error (a bad
# x509_svid_ttl in root) does not hide the checks across blocks that do not
# depend on it: duplicate entry names, an undeclared federates_with, a port
# taken twice, SQLite with replicas.
trust_domain = "example.org"

federation "partner.example" {
  bundle_endpoint    = "https://partner.example:8443"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
}

server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "48h"
  x509_svid_ttl = "forever"
  replicas      = 2

  entry "web" {
    parent_id      = "spiffe://example.org/host"
    spiffe_id      = "spiffe://example.org/web"
    selectors      = ["unix:uid:1000"]
    federates_with = ["nowhere.example"]
  }
  entry "web" {
    parent_id = "spiffe://example.org/host"
    spiffe_id = "spiffe://example.org/web2"
    selectors = ["unix:uid:1001"]
  }
  entry "db" {
    parent_id      = "host"
    spiffe_id      = "spiffe://example.org/db"
    selectors      = ["unix:uid:1002"]
    federates_with = ["elsewhere.example"]
  }
  entry "db" {
    parent_id = "spiffe://example.org/host"
    spiffe_id = "spiffe://example.org/db2"
    selectors = ["unix:uid:1003"]
  }
}

server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "24h"
}
