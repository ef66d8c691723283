# aws-iid-unknown-attribute.hcl: a misspelt aws_iid attribute.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "aws_iid" {
    asume_role = "spire-server-delegate"
  }
}
