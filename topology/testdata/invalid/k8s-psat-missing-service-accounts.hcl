# k8s-psat-missing-service-accounts.hcl: a cluster without its required service_account_allow_list.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "k8s_psat" {
    cluster "prod" {
      audience = ["spire-server"]
    }
  }
}
