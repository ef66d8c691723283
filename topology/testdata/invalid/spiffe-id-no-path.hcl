# spiffe-id-no-path.hcl: an entry's SPIFFE ID or parent ID without a path (the trust domain's own ID).
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }

  entry "web" {
    spiffe_id = "spiffe://example.org"
    parent_id = "spiffe://example.org/host"
    selectors = ["unix:uid:1000"]
  }

  entry "db" {
    spiffe_id = "spiffe://example.org/db"
    parent_id = "spiffe://example.org"
    selectors = ["unix:uid:1001"]
  }
}
