# Configuration of "root" rendered by `arbor topology render` from ../examples/multi-cloud.hcl.
# Generated: edit the topology file instead.

trust_domain = "example.org"

server "root" {
  host           = "root.example.org"
  replicas       = 2
  listen         = "0.0.0.0:8081"
  address        = "root.example.org:8081"
  admin_socket   = "../examples/.arbor/multi-cloud/root/admin.sock"
  health_listen  = "0.0.0.0:9080"
  state_dir      = "../examples/.arbor/multi-cloud/root"
  spiffe_id      = "spiffe://example.org/arbor/server/root"
  ca_ttl         = "180d"
  x509_svid_ttl  = "1h"
  jwt_svid_ttl   = "5m"
  agent_svid_ttl = "3d"
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

  node_attestor "aws_iid" {
    partition                          = "aws"
    skip_block_device                  = false
    disable_instance_profile_selectors = false
    account_ids_for_local_validation   = []
    account_ids                        = ["123456789012"]
    identity_certificate_paths         = []
  }

  node_attestor "gcp_iit" {
    projectid_allow_list  = ["arbor-prod"]
    use_instance_metadata = false
    allowed_label_keys    = []
    allowed_metadata_keys = []
  }

  node_attestor "azure_msi" {
    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {
      resource_id      = "api://arbor-root"
      subscription_ids = ["11111111-1111-1111-1111-111111111111"]
    }
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
