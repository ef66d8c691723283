# Configuration of "region" rendered by `arbor topology render` from ../examples/ha-root.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "region" {
  parent         = "root"
  parent_address = "arbor-root.example.org:8081"
  host           = "arbor-region.example.org"
  replicas       = 2
  listen         = "0.0.0.0:8081"
  address        = "arbor-region.example.org:8081"
  admin_socket   = "../examples/.arbor/ha-root/region/admin.sock"
  health_listen  = "0.0.0.0:9080"
  state_dir      = "../examples/.arbor/ha-root/region"
  spiffe_id      = "spiffe://example.org/arbor/server/region"
  ca_ttl         = "14d"
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  agent_svid_ttl = "1h"
  key_type       = "ec-p256"
  jwt_key_type   = "ec-p256"
  ca_key_storage = "disk"
  log_level      = "info"
  log_format     = "text"
  jwt_issuer     = ""

  datastore "postgres" {
    dsn = "postgres://arbor@region-db.example.org/arbor"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "arbor-root.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/region"
  socket_path      = "../examples/.arbor/ha-root/region/agent.sock"
  data_dir         = "../examples/.arbor/ha-root/region/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "x509pop" {
    private_key_path = "/etc/arbor/machine.key"
    certificate_path = "/etc/arbor/machine.pem"
  }
}
