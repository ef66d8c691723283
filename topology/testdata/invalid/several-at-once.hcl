# several-at-once.hcl: many problems in one file, all reported in one run.
trust_domain = "example.org"

defaults {
  key_type = "ec-p512"
}

server "root" {
  listen = "127.0.0.1:8081"
  ca_ttl = "10d"
}

server "region" {
  parent = "root"
  listen = "127.0.0.1:8081"
  ca_ttl = "7d"
  upstream "disk" {
    cert_file_path = "ca.pem"
    key_file_path  = "ca.key"
  }
}

server "leaf" {
  parent        = "regoin"
  listen        = "127.0.0.1:8083"
  health_listen = "off"
  ca_ttl        = "1h"
}
