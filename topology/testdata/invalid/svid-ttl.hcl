# svid-ttl.hcl: an X509-SVID TTL longer than half the CA TTL.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  x509_svid_ttl = "16d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}
