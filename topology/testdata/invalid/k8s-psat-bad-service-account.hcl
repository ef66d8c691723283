# k8s-psat-bad-service-account.hcl: service accounts not written as namespace:name.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "k8s_psat" {
    cluster "prod" {
      service_account_allow_list = ["spire:spire-agent", "spire-agent", "spire/spire-agent:x"]
    }
  }
}
