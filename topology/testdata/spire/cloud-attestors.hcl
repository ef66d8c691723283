# cloud-attestors.hcl: a root that accepts agents on EC2 (aws_iid) and in
# Kubernetes (k8s_psat, two clusters), with every attribute of both
# attestors, arbor's own among them, and a secret access key that no
# rendering may show; a tier whose agent attests with aws_iid, and one
# whose agent attests with k8s_psat from a pod of the eks-prod cluster.
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
