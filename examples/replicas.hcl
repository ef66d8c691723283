# replicas.hcl — one root tier run as three server processes on this
# machine, sharing one PostgreSQL database. Each replica keeps its own CA;
# the bundle holds all three, so an agent may move between them without
# attesting again. See docs/ha.md.
#
#   export ARBOR_POSTGRES_DSN='postgres://arbor:arbor@127.0.0.1:5432/arbor?sslmode=disable'
#   arbor up examples/replicas.hcl                                   # all three
#   arbor server --topology examples/replicas.hcl --node root/2      # or one by hand
#
# Replica K listens on each port of the block plus K-1 (root/2: 8082 and
# 9082) and keeps its state in <state_dir>/replica-K, so the block's ports
# are spaced at least `replicas` apart.

trust_domain = "example.org"

server "root" {
  listen        = "127.0.0.1:8081" # root/2: 8082, root/3: 8083
  health_listen = "127.0.0.1:9081" # root/2: 9082, root/3: 9083
  replicas      = 3

  datastore "postgres" {
    dsn = env("ARBOR_POSTGRES_DSN", "postgres://arbor@127.0.0.1:5432/arbor?sslmode=disable")
  }

  node_attestor "join_token" {}
}
