# ha-root.hcl — a root tier that survives the loss of a machine: three
# replicas behind one address share a PostgreSQL database (each keeps its
# own CA; the bundle holds all of them), with a regional tier below that is
# itself highly available.
#
#   arbor topology validate examples/ha-root.hcl
#   arbor topology plan examples/ha-root.hcl
#   ARBOR_ROOT_DSN=postgres://... arbor server --topology examples/ha-root.hcl --node root

trust_domain = "example.org"

defaults {
  x509_svid_ttl = "1h"
  jwt_svid_ttl  = "5m"
}

server "root" {
  listen        = "0.0.0.0:8081"
  address       = "arbor-root.example.org:8081" # load balancer over the replicas
  health_listen = "0.0.0.0:9080"                # replica K: 8080+K and 9079+K
  ca_ttl        = "90d"
  replicas      = 3

  datastore "postgres" {
    dsn = env("ARBOR_ROOT_DSN", "postgres://arbor@root-db.example.org/arbor")
  }

  # The company root CA signs the root's CA; arbor re-reads the files when
  # they change.
  upstream "disk" {
    cert_file_path = "/etc/arbor/upstream/ca.pem"
    key_file_path  = "/etc/arbor/upstream/ca.key"
  }

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }
}

server "region" {
  parent        = "root"
  listen        = "0.0.0.0:8081"
  address       = "arbor-region.example.org:8081"
  health_listen = "0.0.0.0:9080"
  ca_ttl        = "14d"
  replicas      = 2

  datastore "postgres" {
    dsn = env("ARBOR_REGION_DSN", "postgres://arbor@region-db.example.org/arbor")
  }

  node_attestor "join_token" {}

  # Each replica runs its own co-located agent with its own machine
  # certificate; all of them get the region's downstream SVID.
  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }
}
