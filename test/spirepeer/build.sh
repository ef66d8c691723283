#!/usr/bin/env bash
# Builds spire-server and spire-agent from the Go module proxy as test peers and
# caches them under a directory keyed by version. Prints the bin directory.
#
#   ARBOR_SPIRE_VERSION  SPIRE version to build (default v1.13.3)
#   ARBOR_SPIRE_CACHE    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/arbor/spire)
set -euo pipefail
version="${ARBOR_SPIRE_VERSION:-v1.13.3}"
cache="${ARBOR_SPIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/arbor/spire}"
bin="$cache/$version/bin"
if [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; then
  echo "$bin"
  exit 0
fi
# Concurrent test binaries may all ask for the peers: one builds, the others
# wait for it and then take the cached binaries.
mkdir -p "$bin"
exec 9>"$cache/$version/.build.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
  if [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; then
    echo "$bin"
    exit 0
  fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module arbor.invalid/spirepeer

go 1.26
MOD
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/spiffe/spire/cmd/spire-agent"
	_ "github.com/spiffe/spire/cmd/spire-server"
)
GO
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/GoogleCloudPlatform/cloudsql-proxy"
export GOFLAGS="-mod=mod"
echo "spirepeer: building spire $version (first run only; cached in $bin)" >&2
go get "github.com/spiffe/spire@$version" >&2
go build -o "$bin/spire-server.tmp" github.com/spiffe/spire/cmd/spire-server >&2
go build -o "$bin/spire-agent.tmp" github.com/spiffe/spire/cmd/spire-agent >&2
mv "$bin/spire-server.tmp" "$bin/spire-server"
mv "$bin/spire-agent.tmp" "$bin/spire-agent"
echo "$bin"
