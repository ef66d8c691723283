# cloud-attestors.hcl: a root that accepts agents on EC2 (aws_iid), in
# Kubernetes (k8s_psat, two clusters), on Compute Engine (gcp_iit) and on
# Azure VMs (azure_msi, two tenants), with every attribute of each
# attestor, arbor's own among them, and secrets that no rendering may show;
# a tier whose agent attests with each of them.
trust_domain = "example.org"

server "root" {
  listen  = "0.0.0.0:8081"
  address = "root.example.org:8081"
  ca_ttl  = "30d"

  node_attestor "aws_iid" {
    access_key_id                      = "AKIAIOSFODNN7EXAMPLE"
    secret_access_key                  = env("ARBOR_CLOUD_ATTESTORS_SECRET", "never-rendered-secret")
    assume_role                        = "spire-server-delegate"
    partition                          = "aws"
    skip_block_device                  = true
    disable_instance_profile_selectors = true
    account_ids_for_local_validation   = ["123456789012", "210987654321"]
    agent_path_template                = "/{{ .PluginName }}/{{ .AccountID }}/{{ .Tags.role | lower }}/{{ .InstanceID }}"
    account_ids                        = ["123456789012"]
    identity_certificate_paths         = ["aws/iid-rsa2048.pem"]
    ec2_endpoint                       = "https://ec2.private.example.org"
    iam_endpoint                       = "https://iam.private.example.org"
    sts_endpoint                       = "https://sts.private.example.org"
  }

  node_attestor "gcp_iit" {
    projectid_allow_list    = ["arbor-prod", "arbor-staging"]
    agent_path_template     = "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceName }}"
    use_instance_metadata   = true
    allowed_label_keys      = ["env"]
    allowed_metadata_keys   = ["role"]
    max_metadata_value_size = 256
    service_account_file    = "gcp/compute-reader.json"
    keys_url                = "https://keys.private.example.org/certs"
    compute_endpoint        = "https://compute.private.example.org/compute/v1/"
  }

  node_attestor "azure_msi" {
    agent_path_template = "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}"
    arm_endpoint        = "https://management.private.example.org/"
    tenant "72f988bf-86f1-41af-91ab-2d7cd011db47" {
      resource_id     = "api://arbor-server"
      subscription_id = "11111111-1111-1111-1111-111111111111"
      app_id          = "22222222-2222-2222-2222-222222222222"
      app_secret      = env("ARBOR_CLOUD_ATTESTORS_AZURE_SECRET", "never-rendered-azure-secret")
    }
    tenant "33333333-3333-3333-3333-333333333333" {
      subscription_ids = ["44444444-4444-4444-4444-444444444444", "55555555-5555-5555-5555-555555555555"]
    }
  }

  node_attestor "k8s_psat" {
    cluster "eks-prod" {
      service_account_allow_list = ["spire:spire-agent", "arbor:agent"]
      kube_config_file           = "kube/eks-prod.yaml"
      allowed_node_label_keys    = ["topology.kubernetes.io/zone"]
      allowed_pod_label_keys     = ["app.kubernetes.io/name"]
    }
    cluster "on-prem" {
      service_account_allow_list = ["arbor:agent"]
      audience                   = []
    }
  }
}

server "ec2" {
  parent  = "root"
  listen  = "0.0.0.0:8081"
  address = "ec2.example.org:8081"
  ca_ttl  = "7d"

  agent {
    node_attestor "aws_iid" {
      ec2_metadata_endpoint = "http://169.254.169.254/latest"
    }
  }
}

server "eks" {
  parent  = "root"
  listen  = "0.0.0.0:8081"
  address = "eks.example.org:8081"
  ca_ttl  = "7d"

  agent {
    node_attestor "k8s_psat" {
      cluster    = "eks-prod"
      token_path = "/var/run/secrets/tokens/arbor-agent"
    }
  }
}

server "gce" {
  parent  = "root"
  listen  = "0.0.0.0:8081"
  address = "gce.example.org:8081"
  ca_ttl  = "7d"

  agent {
    node_attestor "gcp_iit" {
      service_account     = "arbor-agent@arbor-prod.iam.gserviceaccount.com"
      identity_token_host = "metadata.google.internal"
    }
  }
}

server "azure" {
  parent  = "root"
  listen  = "0.0.0.0:8081"
  address = "azure.example.org:8081"
  ca_ttl  = "7d"

  agent {
    node_attestor "azure_msi" {
      resource_id       = "api://arbor-server"
      metadata_endpoint = "http://169.254.169.254"
    }
  }
}
