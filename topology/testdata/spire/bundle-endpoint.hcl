# bundle-endpoint.hcl: a root serving its bundle endpoint with a Web PKI
# certificate and a regional serving it with its own SVID.
trust_domain = "example.org"

server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "48h"
  bundle_endpoint {
    listen       = "0.0.0.0:8443"
    profile      = "https_web"
    refresh_hint = "10m"
    cert_file    = "web.pem" # test fixture: a throwaway self-signed certificate
    key_file     = "web-key.pem"
  }
}

server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  address       = "127.0.0.1:8082"
  health_listen = "off"
  bundle_endpoint {
    listen = "127.0.0.1:8444"
  }
}
