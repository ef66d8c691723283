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
# Each regional tier runs on a VM of its cloud, and its co-located agent
# proves that to root with the cloud's own identity document: aws_iid (the
# EC2 instance identity document AWS signed), gcp_iit (the instance identity
# token Google signed), azure_msi (the VM's managed identity token). Those
# attest once per machine: an agent whose SVID expires during a root outage
# longer than its SVID lifetime must be evicted at root before it attests
# again (`arbor topology simulate ... --down root` says when). Each leaf
# runs in a Kubernetes cluster of its region, and its agent attests to the
# regional tier with its pod's projected service account token (k8s_psat),
# which it can do again by itself after any outage. See docs/attestation.md
# for the permissions each attestor needs.
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
  health_listen = "0.0.0.0:9080"            # replica 2: 8082 and 9081
  ca_ttl        = "180d"
  replicas      = 2

  # The regional agents attest once per VM (aws_iid, gcp_iit, azure_msi), so
  # their agent SVIDs from root must outlive a root outage: with 3 days a
  # root down for up to a day and a half needs no eviction.
  agent_svid_ttl = "3d"

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

  # The regional tiers' co-located agents prove which VM they run on.
  node_attestor "aws_iid" {
    account_ids = ["123456789012"] # only this account's instances
  }
  node_attestor "gcp_iit" {
    projectid_allow_list = ["arbor-prod"]
  }
  node_attestor "azure_msi" {
    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {
      resource_id     = "api://arbor-root" # an audience of its own, not Resource Manager's
      subscription_id = "11111111-1111-1111-1111-111111111111"
      # Resource Manager is read with the Azure SDK's default credentials
      # (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET in root's environment); or set
      # app_id and app_secret = env("...") here.
    }
  }
}

server "aws-us-east-1" {
  parent        = "root"
  listen        = "0.0.0.0:8081"
  address       = "arbor.us-east-1.aws.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.region_ca_ttl

  datastore "sqlite" {}

  # The leaf's agent runs in a pod of the region's EKS cluster; this server
  # reaches that cluster's API server to review its token.
  node_attestor "k8s_psat" {
    cluster "eks-us-east-1a" {
      service_account_allow_list = ["arbor:arbor-agent"]
      kube_config_file           = "/etc/arbor/kube/eks-us-east-1a.yaml"
    }
  }

  # The agent beside this server attests to root with the instance identity
  # document of its EC2 instance.
  agent {
    node_attestor "aws_iid" {}
  }
}

server "aws-us-east-1a" {
  parent        = "aws-us-east-1"
  listen        = "0.0.0.0:8081"
  address       = "arbor.us-east-1a.aws.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.leaf_ca_ttl

  datastore "sqlite" {}

  # Workload agents of this leaf run in pods of the same cluster.
  node_attestor "k8s_psat" {
    cluster "eks-us-east-1a" {
      service_account_allow_list = ["arbor:arbor-agent"]
    }
  }

  agent {
    node_attestor "k8s_psat" {
      cluster = "eks-us-east-1a"
    }
    # Pods calling this agent are told apart by their pod and container.
    workload_attestor "k8s" {}
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

  node_attestor "k8s_psat" {
    cluster "gke-europe-west1-b" {
      service_account_allow_list = ["arbor:arbor-agent"]
      kube_config_file           = "/etc/arbor/kube/gke-europe-west1-b.yaml"
    }
  }

  agent {
    node_attestor "gcp_iit" {}
  }
}

server "gcp-europe-west1-b" {
  parent        = "gcp-europe-west1"
  listen        = "0.0.0.0:8081"
  address       = "arbor.europe-west1-b.gcp.example.org:8081"
  health_listen = "0.0.0.0:8080"
  ca_ttl        = var.leaf_ca_ttl

  datastore "sqlite" {}

  node_attestor "k8s_psat" {
    cluster "gke-europe-west1-b" {
      service_account_allow_list = ["arbor:arbor-agent"]
    }
  }

  agent {
    node_attestor "k8s_psat" {
      cluster = "gke-europe-west1-b"
    }
    # Pods calling this agent are told apart by their pod and container.
    workload_attestor "k8s" {}
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

  node_attestor "k8s_psat" {
    cluster "aks-westeurope-1" {
      service_account_allow_list = ["arbor:arbor-agent"]
      kube_config_file           = "/etc/arbor/kube/aks-westeurope-1.yaml"
    }
  }

  agent {
    node_attestor "azure_msi" {
      resource_id = "api://arbor-root" # the audience root's tenant block expects
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

  node_attestor "k8s_psat" {
    cluster "aks-westeurope-1" {
      service_account_allow_list = ["arbor:arbor-agent"]
    }
  }

  agent {
    node_attestor "k8s_psat" {
      cluster = "aks-westeurope-1"
    }
    # Pods calling this agent are told apart by their pod and container.
    workload_attestor "k8s" {}
  }
}
