# single-server.hcl — the smallest arbor topology: one root server on this machine.
#
# Run it with:
#   arbor server --topology examples/single-server.hcl --node root
#
# It creates examples/.arbor/single-server/root/ for its keys, database and admin socket.
# Admin commands (registration entries, join tokens for agents) talk to it
# through that socket.

# Every SPIFFE ID this topology issues starts with spiffe://example.org/.
# Pick a name you control; every tier of the topology shares it.
trust_domain = "example.org"

# Settings every server inherits unless its own block overrides them.
defaults {
  x509_svid_ttl = "1h" # lifetime of the X.509 certificates workloads get
  jwt_svid_ttl  = "5m" # lifetime of JWT tokens workloads get
  key_type      = "ec-p256" # CA key: ec-p256, ec-p384, rsa-2048 or rsa-4096
}

# A server block is one server process. "root" is its name: you pass it to
# --node. With no `parent`, it is a root: it makes its own self-signed CA.
server "root" {
  # Where agents (and, later, child servers) connect: gRPC over TLS.
  listen = "127.0.0.1:8081"

  # How long the server's CA certificate lives. It is rotated at half-life,
  # and every SVID must fit inside it (at most half of ca_ttl).
  ca_ttl = "24h"

  # Everything the server keeps — CA keys, database, admin socket — lives
  # here. Relative paths are relative to this file's directory. This is also
  # the default: .arbor/<this file's name without .hcl>/<server name>, so
  # that the examples side by side never share state.
  state_dir = ".arbor/single-server/root"

  # The admin API (entries, tokens, bundles) listens on a local Unix socket,
  # never on the network. This is also the default: <state_dir>/admin.sock.
  admin_socket = ".arbor/single-server/root/admin.sock"

  # Plain HTTP liveness/readiness checks and metrics; "off" disables them.
  health_listen = "127.0.0.1:8080"

  # Registration entries, attested agents and join tokens are stored in an
  # embedded SQLite file (this path is also the default). For several
  # servers sharing one database, use: datastore "postgres" { dsn = env("ARBOR_DSN") }
  datastore "sqlite" {
    path = ".arbor/single-server/root/datastore.sqlite3"
  }

  # How agents prove who they are: with a single-use join token that an
  # admin generates. default_ttl is how long an unused token stays valid.
  node_attestor "join_token" {
    default_ttl = "10m"
  }
}
