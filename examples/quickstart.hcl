# quickstart.hcl — a whole nested trust domain on this machine: a root, a
# regional tier and two leaves, each its own server process.
#
#   arbor up examples/quickstart.hcl
#
# arbor up starts the root, then for every child: registers the child's
# co-located agent and downstream entry at its parent, starts that agent
# (attested to the parent with a join token), then the child server, which
# gets its intermediate CA from the parent through that agent's SVID. Each
# leaf also runs a workload agent and a demo workload; the demo workloads
# talk mTLS to each other across leaves and validate each other's JWT-SVIDs.
#
#   root ─ regional ─┬─ leaf-a
#                    └─ leaf-b
#
# State, sockets and logs live under examples/.arbor/quickstart/<server>/.

trust_domain = "example.org"

defaults {
  x509_svid_ttl = "1h"
  jwt_svid_ttl  = "5m"
  key_type      = "ec-p256"
}

server "root" {
  listen        = "127.0.0.1:8081"
  health_listen = "127.0.0.1:8091"
  ca_ttl        = "48h" # every child CA lives at most half its parent's
  datastore "sqlite" {}
  node_attestor "join_token" {}
}

server "regional" {
  parent        = "root"
  listen        = "127.0.0.1:8082"
  health_listen = "127.0.0.1:8092"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {}

  # The agent beside this server, attested to root, serves it the SVID of
  # its downstream entry. Join tokens are fine on one machine; across
  # machines prefer x509pop, which can re-attest after a long outage.
  agent {
    node_attestor "join_token" {}
  }
}

server "leaf-a" {
  parent        = "regional"
  listen        = "127.0.0.1:8083"
  health_listen = "127.0.0.1:8093"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

server "leaf-b" {
  parent        = "regional"
  listen        = "127.0.0.1:8084"
  health_listen = "127.0.0.1:8094"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}
