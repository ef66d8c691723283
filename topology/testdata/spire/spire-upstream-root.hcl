# A root that gets its CA from a real SPIRE server of another deployment
# (upstream "spire"), through its own co-located agent.
trust_domain = "example.org"

server "root" {
  listen = "127.0.0.1:9081"
  ca_ttl = "48h"

  datastore "postgres" {
    dsn = "dbname=arbor user=arbor host=/run/postgresql sslmode=disable"
  }

  upstream "spire" {
    server_address = "spire.corp.example.org:8081"
  }

  agent {
    node_attestor "x509pop" {
      private_key_path   = "/etc/arbor/machine.key"
      certificate_path   = "/etc/arbor/machine.pem"
      intermediates_path = "/etc/arbor/machine-chain.pem"
    }
  }
}
