# multi-cloud.hcl — one trust domain across three clouds, three tiers:
#
#   root (2 replicas, CA from AWS Private CA)
#   ├─ aws-us-east-1          regional tier in AWS
#   │  └─ aws-us-east-1a      leaf: serves the agents of one zone
#   ├─ gcp-europe-west1       regional tier in GCP
#   │  └─ gcp-europe-west1-b  leaf
#   └─ azure-westeurope       regional tier in Azure
#      └─ azure-westeurope-1  leaf
#
# Every co-located agent attests with a machine certificate (x509pop), which
# works in every cloud today and re-attests by itself after a long outage.
# The cloud-native node attestors (aws_iid, gcp_iit, azure_msi) are planned;
# each tier's node_attestor block is where they will go.
#
# Check it, see its budgets, and render one machine's configuration:
#   arbor topology validate examples/multi-cloud.hcl
#   arbor topology plan     examples/multi-cloud.hcl
#   arbor topology render   examples/multi-cloud.hcl --node aws-us-east-1a
#   arbor topology simulate examples/multi-cloud.hcl --down aws-us-east-1 --for 6h

trust_domain = "example.org"

# CA lifetimes per tier. Each tier's CA may live at most half its parent's,
# so the parent can always sign a full-length child CA at its own half-life.
variable "region_ca_ttl" {
  default     = "30d"
  description = "CA lifetime of the regional tiers (set ARBOR_VAR_region_ca_ttl to change it)"
}

variable "leaf_ca_ttl" {
  default = "7d"
}

defaults {
  x509_svid_ttl     = "1h"
  jwt_svid_ttl      = "5m"
  key_type          = "ec-p256"
  sync_interval     = "5s"
  min_outage_budget = "1d" # warn about any tier that cannot outlive its parent by a day
}

server "root" {
  listen        = "0.0.0.0:8081"
  address       = "root.example.org:8081" # a load balancer in front of both replicas
  health_listen = "0.0.0.0:8080"
  ca_ttl        = "180d"
  replicas      = 2

  # Both replicas share one database; each keeps its own CA.
  datastore "postgres" {
    dsn = env("ARBOR_ROOT_DSN", "postgres://arbor@root-db.example.org/arbor")
  }

  # The root's CA is signed by the company's AWS Private CA, so every SVID
  # chains to the existing enterprise root.
  upstream "aws_pca" {
    region                    = "us-east-1"
    certificate_authority_arn = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/00000000-0000-0000-0000-000000000000"
  }

  # Regional tiers' co-located agents prove themselves with a machine
  # certificate from the platform PKI.
  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }
}

server "aws-us-east-1" {
  parent        = "root"
  listen        = "0.0.0.0:8081"
  address       = "arbor.us-east-1.aws.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.region_ca_ttl

  datastore "sqlite" {}

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }

  # The agent beside this server attests to root with its machine
  # certificate; it can re-attest by itself after a long root outage.
  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }
}

server "aws-us-east-1a" {
  parent        = "aws-us-east-1"
  listen        = "0.0.0.0:8081"
  address       = "arbor.us-east-1a.aws.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.leaf_ca_ttl

  datastore "sqlite" {}

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }
  node_attestor "join_token" {}

  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }

  # Registration entries this leaf holds, applied GitOps-style.
  entry "checkout" {
    spiffe_id = "spiffe://example.org/aws/checkout"
    parent_id = "spiffe://example.org/nodes/aws-us-east-1a"
    selectors = ["unix:user:checkout"]
    dns_names = ["checkout.us-east-1a.example.org"]
  }
}

server "gcp-europe-west1" {
  parent        = "root"
  listen        = "0.0.0.0:8081"
  address       = "arbor.europe-west1.gcp.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.region_ca_ttl

  datastore "sqlite" {}

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }

  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }
}

server "gcp-europe-west1-b" {
  parent        = "gcp-europe-west1"
  listen        = "0.0.0.0:8081"
  address       = "arbor.europe-west1-b.gcp.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.leaf_ca_ttl

  datastore "sqlite" {}

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }

  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }

  entry "payments" {
    spiffe_id     = "spiffe://example.org/gcp/payments"
    parent_id     = "spiffe://example.org/nodes/gcp-europe-west1-b"
    selectors     = ["unix:user:payments"]
    x509_svid_ttl = "30m" # shorter than the tier default: rotates twice as often
  }
}

server "azure-westeurope" {
  parent        = "root"
  listen        = "0.0.0.0:8081"
  address       = "arbor.westeurope.azure.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.region_ca_ttl

  datastore "sqlite" {}

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }

  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }
}

server "azure-westeurope-1" {
  parent        = "azure-westeurope"
  listen        = "0.0.0.0:8081"
  address       = "arbor.westeurope-1.azure.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.leaf_ca_ttl

  datastore "sqlite" {}

  node_attestor "x509pop" {
    ca_bundle_paths = ["agent-ca.pem"]
  }

  agent {
    node_attestor "x509pop" {
      private_key_path = "/etc/arbor/machine.key"
      certificate_path = "/etc/arbor/machine.pem"
    }
  }
}
