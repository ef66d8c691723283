# topology.hcl — the tree terraform/examples/tree manages: a root, two
# regions and three leaves, every tier its own server process on this
# machine (ports 18181-18186, health 18191-18196), each with its state under
# var.state_root.
#
#   root ─┬─ region-a ─┬─ leaf-a1
#         │            └─ leaf-a2
#         └─ region-b ─── leaf-b1
#
# Check it with:
#
#   arbor topology validate topology.hcl --var state_root=/tmp/x
#   arbor topology plan topology.hcl --var state_root=/tmp/x

trust_domain = "example.org"

variable "state_root" {
  description = "directory holding every tier's state_dir (admin sockets at <state_root>/<name>/admin.sock)"
}

server "root" {
  state_dir     = "${var.state_root}/root"
  listen        = "127.0.0.1:18181"
  health_listen = "127.0.0.1:18191"
  ca_ttl        = "48h"
  datastore "sqlite" {}
  node_attestor "join_token" {}

  # A workload of the operators' machines (their agents attest as
  # spiffe://example.org/ops/node).
  entry "dashboard" {
    spiffe_id = "spiffe://example.org/ops/dashboard"
    parent_id = "spiffe://example.org/ops/node"
    selectors = ["unix:uid:1000"]
  }
}

server "region-a" {
  parent        = "root"
  state_dir     = "${var.state_root}/region-a"
  listen        = "127.0.0.1:18182"
  health_listen = "127.0.0.1:18192"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }

  entry "ops" {
    spiffe_id = "spiffe://example.org/region-a/ops"
    parent_id = "spiffe://example.org/region-a/workers"
    selectors = ["unix:uid:1000"]
  }
}

server "region-b" {
  parent        = "root"
  state_dir     = "${var.state_root}/region-b"
  listen        = "127.0.0.1:18183"
  health_listen = "127.0.0.1:18193"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

server "leaf-a1" {
  parent        = "region-a"
  state_dir     = "${var.state_root}/leaf-a1"
  listen        = "127.0.0.1:18184"
  health_listen = "127.0.0.1:18194"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

server "leaf-a2" {
  parent        = "region-a"
  state_dir     = "${var.state_root}/leaf-a2"
  listen        = "127.0.0.1:18185"
  health_listen = "127.0.0.1:18195"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}

server "leaf-b1" {
  parent        = "region-b"
  state_dir     = "${var.state_root}/leaf-b1"
  listen        = "127.0.0.1:18186"
  health_listen = "127.0.0.1:18196"
  ca_ttl        = "12h"
  datastore "sqlite" {}
  node_attestor "join_token" {}
  agent {
    node_attestor "join_token" {}
  }
}
