# cycle.hcl: parents that loop back.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "x509pop" {
    ca_bundle_paths = ["ca.pem"]
  }
}

server "a" {
  parent        = "b"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "x509pop" {
      private_key_path = "k.pem"
      certificate_path = "c.pem"
    }
  }
}

server "b" {
  parent        = "a"
  listen        = "127.0.0.1:8083"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "x509pop" {
      private_key_path = "k.pem"
      certificate_path = "c.pem"
    }
  }
}
