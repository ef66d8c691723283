# k8s-psat-agent-cluster-unknown.hcl: a co-located agent attesting from a cluster its parent does not list.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "k8s_psat" {
    cluster "eks-prod" {
      service_account_allow_list = ["spire:spire-agent"]
    }
    cluster "eks-staging" {
      service_account_allow_list = ["spire:spire-agent"]
    }
  }
}

server "edge" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "k8s_psat" {
      cluster = "eks-prd"
    }
  }
}
