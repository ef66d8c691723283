# bundle-endpoint-bad-profile.hcl: a profile SPIFFE's bundle endpoint spec does not define, and a second endpoint block.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  bundle_endpoint {
    listen  = "127.0.0.1:8443"
    profile = "https_spife"
  }
  bundle_endpoint {
    listen = "127.0.0.1:8444"
  }
}
