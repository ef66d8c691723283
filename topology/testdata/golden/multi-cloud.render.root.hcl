# Configuration of "root" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "root" {
  host           = "root.example.org"
  replicas       = 2
  listen         = "0.0.0.0:8081"
  address        = "root.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/root/admin.sock"
  health_listen  = "0.0.0.0:8080"
  state_dir      = "../examples/.arbor/multi-cloud/root"
  spiffe_id      = "spiffe://example.org/arbor/server/root"
  ca_ttl         = "180d"
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

  upstream "aws_pca" {
    region                    = "us-east-1"
    certificate_authority_arn = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/00000000-0000-0000-0000-000000000000"
    ca_signing_template_arn   = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen3/V1"
  }

  node_attestor "x509pop" {
    ca_bundle_paths = ["../examples/agent-ca.pem"]
  }
}

entry "downstream-aws-us-east-1" {
  spiffe_id      = "spiffe://example.org/arbor/server/aws-us-east-1"
  parent_id      = "spiffe://example.org/arbor/agent/aws-us-east-1"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server aws-us-east-1"
}

entry "downstream-gcp-europe-west1" {
  spiffe_id      = "spiffe://example.org/arbor/server/gcp-europe-west1"
  parent_id      = "spiffe://example.org/arbor/agent/gcp-europe-west1"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server gcp-europe-west1"
}

entry "downstream-azure-westeurope" {
  spiffe_id      = "spiffe://example.org/arbor/server/azure-westeurope"
  parent_id      = "spiffe://example.org/arbor/agent/azure-westeurope"
  selectors      = []
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  dns_names      = []
  admin          = false
  downstream     = true
  federates_with = []
  hint           = "arbor downstream server azure-westeurope"
}
