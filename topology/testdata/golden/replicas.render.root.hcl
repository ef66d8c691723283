# Configuration of "root" rendered by `arbor topology render` from ../examples/replicas.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "root" {
  host           = "local"
  replicas       = 3
  listen         = "127.0.0.1:8081"
  address        = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
  admin_socket   = "../examples/.arbor/replicas/root/admin.sock"
  health_listen  = "127.0.0.1:9081"
  state_dir      = "../examples/.arbor/replicas/root"
  spiffe_id      = "spiffe://example.org/arbor/server/root"
  ca_ttl         = "24h"
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
    dsn = "postgres://arbor@127.0.0.1:5432/arbor?sslmode=disable"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}
