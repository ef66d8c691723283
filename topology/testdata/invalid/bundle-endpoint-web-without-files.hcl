# bundle-endpoint-web-without-files.hcl: an https_web bundle endpoint needs a certificate and key; https_spiffe takes none.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "48h"
  bundle_endpoint {
    listen  = "127.0.0.1:8443"
    profile = "https_web"
  }
}

server "other" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  bundle_endpoint {
    listen    = "127.0.0.1:8444"
    cert_file = "web.pem"
  }
}
