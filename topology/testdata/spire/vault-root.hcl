# A root whose CA Vault signs (AppRole login), with a child on join tokens
# and in-memory CA keys: render --format spire maps each to SPIRE's names.
trust_domain = "example.org"

server "root" {
  listen       = "0.0.0.0:8081"
  address      = "root.example.org:8081"
  ca_ttl       = "720h"
  key_type     = "ec-p384"
  jwt_key_type = "rsa-2048"
  jwt_issuer   = "https://oidc.example.org"
  log_level    = "debug"

  datastore "sqlite" {}

  upstream "vault" {
    address   = "https://vault.example.org:8200"
    pki_mount = "pki_int"
    namespace = "platform"
    auth "approle" {
      role_id   = "arbor-root"
      secret_id = "s3cr3t"
    }
  }

  node_attestor "join_token" {
    default_ttl = "1h"
  }
}

server "edge" {
  parent         = "root"
  listen         = "0.0.0.0:8082"
  address        = "edge.example.org:8082"
  health_listen  = ""
  ca_ttl         = "72h"
  ca_key_storage = "memory"

  datastore "sqlite" {}

  agent {
    node_attestor "join_token" {
      token = "0d1c5b5e-token"
    }
    server_selectors = ["unix:user:spire"]
    sync_interval    = "30s"
  }
}
