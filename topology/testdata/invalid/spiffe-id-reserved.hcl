# spiffe-id-reserved.hcl: IDs under /spire, where SPIRE names servers and agents, claimed by an entry, a server and a join token alias (an agent's spiffe_id); as a parent they are fine.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "join_token" {}

  entry "web" {
    spiffe_id = "spiffe://example.org/spire/web"
    parent_id = "spiffe://example.org/spire/agent/join_token/t1"
    selectors = ["unix:uid:1000"]
  }

  entry "all" {
    spiffe_id = "spiffe://example.org/spire"
    parent_id = "spiffe://example.org/spire/server"
    selectors = ["unix:uid:1001"]
  }
}

server "edge" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "off"
  ca_ttl        = "7d"
  spiffe_id     = "spiffe://example.org/spire/server"
  agent {
    spiffe_id = "spiffe://example.org/spire/agent/edge"
    node_attestor "join_token" {}
  }
}
