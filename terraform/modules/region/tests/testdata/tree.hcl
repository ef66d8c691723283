# A tree whose agents attest with x509pop (agent.pem, signed by
# agent-ca.pem), so that it has no warnings: the region module's tests.

trust_domain = "example.org"

server "root" {
  state_dir     = "/var/lib/arbor/root"
  listen        = "127.0.0.1:28181"
  health_listen = "off"
  ca_ttl        = "48h"
  node_attestor "x509pop" { ca_bundle_paths = ["agent-ca.pem"] }
}

server "region-a" {
  parent        = "root"
  state_dir     = "/var/lib/arbor/region-a"
  listen        = "127.0.0.1:28182"
  health_listen = "off"
  ca_ttl        = "24h"
  node_attestor "x509pop" { ca_bundle_paths = ["agent-ca.pem"] }
  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "agent.pem"
    }
  }
}

server "leaf-a1" {
  parent        = "region-a"
  state_dir     = "/var/lib/arbor/leaf-a1"
  listen        = "0.0.0.0:28183"
  health_listen = "off"
  ca_ttl        = "12h"
  agent {
    server_selectors = ["unix:user:arbor"]
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "agent.pem"
    }
  }
}

server "leaf-a2" {
  parent        = "region-a"
  state_dir     = "/var/lib/arbor/leaf-a2"
  listen        = "0.0.0.0:28184"
  health_listen = "off"
  ca_ttl        = "12h"
  agent {
    socket_path = "/run/arbor/leaf-a2/agent.sock"
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "agent.pem"
    }
  }
}
