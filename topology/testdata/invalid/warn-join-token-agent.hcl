# warn-join-token-agent.hcl: a co-located agent on join_token (warning).
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "join_token" {}
}

server "edge" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "7d"
  agent {
    node_attestor "join_token" {}
  }
}
