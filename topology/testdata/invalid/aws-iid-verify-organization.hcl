# aws-iid-verify-organization.hcl: SPIRE's AWS Organizations check, which arbor's aws_iid does not have.
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "off"
  ca_ttl        = "30d"
  node_attestor "aws_iid" {
    verify_organization = {
      management_account_id = "123456789012"
      assume_org_role       = "spire-list-accounts"
    }
  }
}
