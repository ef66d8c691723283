# Configuration of "gce" rendered by `arbor topology render` from testdata/spire/cloud-attestors.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "gce" {
  parent         = "root"
  parent_address = "root.example.org:8081"
  host           = "gce.example.org"
  replicas       = 1
  listen         = "0.0.0.0:8081"
  address        = "gce.example.org:8081"
  admin_socket   = "testdata/spire/.arbor/cloud-attestors/gce/admin.sock"
  health_listen  = "127.0.0.1:8080"
  state_dir      = "testdata/spire/.arbor/cloud-attestors/gce"
  spiffe_id      = "spiffe://example.org/arbor/server/gce"
  ca_ttl         = "7d"
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  agent_svid_ttl = "1h"
  key_type       = "ec-p256"
  jwt_key_type   = "ec-p256"
  ca_key_storage = "disk"
  log_level      = "info"
  log_format     = "text"
  jwt_issuer     = ""

  datastore "sqlite" {
    path = "testdata/spire/.arbor/cloud-attestors/gce/datastore.sqlite3"
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}

agent {
  server_address   = "root.example.org:8081"
  spiffe_id        = "spiffe://example.org/arbor/agent/gce"
  socket_path      = "testdata/spire/.arbor/cloud-attestors/gce/agent.sock"
  data_dir         = "testdata/spire/.arbor/cloud-attestors/gce/agent"
  server_selectors = []
  sync_interval    = "5s"

  node_attestor "gcp_iit" {
    service_account     = "arbor-agent@arbor-prod.iam.gserviceaccount.com"
    identity_token_host = "metadata.google.internal"
  }
}
