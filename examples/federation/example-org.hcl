# example-org.hcl — two trust domains on this machine, federated over their
# SPIFFE bundle endpoints. This file is example.org (a root, a regional tier
# and a leaf); partner.hcl beside it is partner.example (a root and a leaf).
#
#   arbor up examples/federation/example-org.hcl examples/federation/partner.hcl
#
# arbor up starts both roots first, then does once what a federation over an
# https_spiffe bundle endpoint needs out of band: each root is given the
# other trust domain's bundle (read through the other root's admin socket),
# to authenticate the endpoint's SVID on its first fetch. From then on each
# root fetches the other's bundle endpoint by itself, at the refresh hint the
# endpoint serves, and the tiers below get the federated bundle from their
# parent. The leaves' demo workloads federate with the other trust domain and
# form one ring across both files: each keeps an mTLS connection to the demo
# workload of partner.example's leaf and validates a JWT-SVID from it. The
# status lines show each federated bundle's age and refreshes.
#
#   example.org       root ─ regional ─ leaf    bundle endpoint 127.0.0.1:8121
#   partner.example   root ─ leaf               bundle endpoint 127.0.0.1:8221
#
# Both files name a server "root" and a "leaf": from another terminal, say
# which with the trust domain,
#
#   arbor up --stop partner.example/leaf examples/federation/*.hcl
#   arbor up --start partner.example/leaf examples/federation/*.hcl
#
# (a name only one file declares, such as regional, needs no prefix). Ports
# are 81xx and 82xx, so examples/quickstart.hcl can run at the same time.
# State, sockets and logs live under examples/federation/.arbor/.

trust_domain = "example.org"

defaults {
  x509_svid_ttl = "1h"
  jwt_svid_ttl  = "5m"
  key_type      = "ec-p256"
}

server "root" {
  listen        = "127.0.0.1:8101"
  health_listen = "127.0.0.1:8111" # /metrics: the federated bundle's age
  state_dir     = ".arbor/example-org/root"
  ca_ttl        = "48h"
  datastore "sqlite" {}
  node_attestor "join_token" {}

  # The bundle partner.example fetches, authenticated with this server's
  # own SVID, spiffe://example.org/spire/server.
  bundle_endpoint {
    listen       = "127.0.0.1:8121"
    profile      = "https_spiffe"
    refresh_hint = "1m"
  }
}

server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:8102"
  health_listen = "127.0.0.1:8112"
  state_dir     = ".arbor/example-org/regional"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

server "leaf" {
  parent        = "regional"
  listen        = "127.0.0.1:8103"
  health_listen = "127.0.0.1:8113"
  state_dir     = ".arbor/example-org/leaf"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

# The root fetches partner.example's bundle from partner.hcl's root. Run
# without partner.hcl, it needs bootstrap_bundle = "partner.pem" (its bundle,
# from `arbor bundle show` at that root) for the first contact.
federation "partner.example" {
  bundle_endpoint    = "https://127.0.0.1:8221"
  profile            = "https_spiffe"
  endpoint_spiffe_id = "spiffe://partner.example/spire/server"
}
