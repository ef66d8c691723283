# Configuration of "root" rendered by `arbor topology render` from ../examples/ha-root.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "root" {
  host           = "arbor-root.example.org"
  replicas       = 3
  listen         = "0.0.0.0:8081"
  address        = "arbor-root.example.org:8081"
  admin_socket   = "../examples/.arbor/ha-root/root/admin.sock"
  health_listen  = "0.0.0.0:9080"
  state_dir      = "../examples/.arbor/ha-root/root"
  spiffe_id      = "spiffe://example.org/arbor/server/root"
  ca_ttl         = "90d"
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
    dsn = "postgres://arbor@root-db.example.org/arbor"
  }

  upstream "disk" {
    cert_file_path = "/etc/arbor/upstream/ca.pem"
    key_file_path  = "/etc/arbor/upstream/ca.key"
  }

  node_attestor "x509pop" {
    ca_bundle_paths = ["../examples/agent-ca.pem"]
  }
}

entry "downstream-region" {
  spiffe_id      = "spiffe://example.org/arbor/server/region"
  parent_id      = "spiffe://example.org/arbor/agent/region"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server region"
}
