#!/usr/bin/env bash
# serve.sh KIND DIR PORT starts one server for the load generator in the
# background, with the settings test/bench/compare gives both kinds (EC P-256
# CA and JWT keys, 24h CA, 1h X509-SVIDs, join_token attestation, SQLite,
# warn logging; spire-server's per-IP rate limits off because every simulated
# agent shares 127.0.0.1):
#
#   KIND  arbor (the binary is $ARBOR, default: arbor on PATH) or spire
#         (spire-server from $SPIRE_BIN, default the cached v1.15.3)
#   DIR   fresh directory for its configuration, state and log; the admin
#         socket is DIR/api.sock, the pid is written to DIR/pid
#   PORT  agent API port on 127.0.0.1
#
# It returns once the admin socket and the agent port answer; stop the
# server with: kill "$(cat DIR/pid)"
set -euo pipefail

if [ $# -ne 3 ]; then
	echo "usage: serve.sh arbor|spire DIR PORT" >&2
	exit 2
fi
kind=$1 dir=$2 port=$3
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case $kind in
arbor)
	cat >"$dir/topology.hcl" <<EOF
trust_domain = "example.org"

defaults {
  x509_svid_ttl = "1h"
  jwt_svid_ttl  = "5m"
  key_type      = "ec-p256"
  jwt_key_type  = "ec-p256"
}

server "load" {
  listen        = "127.0.0.1:$port"
  state_dir     = "$dir/state"
  admin_socket  = "$dir/api.sock"
  health_listen = "off"
  log_level     = "warn"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {
    default_ttl = "1h"
  }
}
EOF
	"${ARBOR:-arbor}" server --topology "$dir/topology.hcl" --node load >"$dir/server.log" 2>&1 &
	;;
spire)
	cat >"$dir/server.conf" <<EOF
server {
  bind_address          = "127.0.0.1"
  bind_port             = "$port"
  socket_path           = "$dir/api.sock"
  trust_domain          = "example.org"
  data_dir              = "$dir/data"
  log_level             = "WARN"
  ca_ttl                = "24h"
  ca_key_type           = "ec-p256"
  jwt_key_type          = "ec-p256"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl  = "5m"

  ratelimit {
    attestation = false
    signing     = false
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = "sqlite3"
      connection_string = "$dir/datastore.sqlite3"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
EOF
	"${SPIRE_BIN:-$HOME/.cache/arbor/spire/v1.15.3/bin}/spire-server" run -config "$dir/server.conf" >"$dir/server.log" 2>&1 &
	;;
*)
	echo "serve.sh: unknown kind $kind (want arbor or spire)" >&2
	exit 2
	;;
esac
pid=$!
echo "$pid" >"$dir/pid"
for _ in $(seq 1 300); do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "serve.sh: $kind exited; its log:" >&2
		cat "$dir/server.log" >&2
		exit 1
	fi
	if [ -S "$dir/api.sock" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		exit 0
	fi
	sleep 0.2
done
echo "serve.sh: $kind not listening after 60s; see $dir/server.log" >&2
exit 1
