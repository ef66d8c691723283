#!/usr/bin/env bash
# Builds spire-server and spire-agent from the Go module proxy as test peers and
# caches them under a directory keyed by version ($cache/<version>/bin).
#
#   build.sh              builds $ARBOR_SPIRE_VERSION (default v1.13.3), prints its bin directory
#   build.sh V1 V2 ...    builds each version in turn, prints one bin directory per line, in order
#   build.sh all          the same for every version the interop tests run against (below)
#
#   ARBOR_SPIRE_VERSION  SPIRE version to build without arguments (default v1.13.3)
#   ARBOR_SPIRE_CACHE    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/arbor/spire)
#
# Builds run one after the other: each takes about 5-7 minutes on 2 cores the
# first time and nothing afterwards.
set -euo pipefail

# The SPIRE releases test/e2e runs its interop tests against: the oldest
# supported one first (it is also the default peer of the other tests), then
# the newest release.
supported=(v1.13.3 v1.15.3)

cache="${ARBOR_SPIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/arbor/spire}"

# build_one VERSION builds (or finds) one version and prints its bin directory.
build_one() {
  local version="$1"
  local bin="$cache/$version/bin"
  if [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; then
    echo "$bin"
    return 0
  fi
  # Concurrent test binaries may all ask for the peers: one builds, the others
  # wait for it and then take the cached binaries.
  mkdir -p "$bin"
  (
    exec 9>"$cache/$version/.build.lock"
    if command -v flock >/dev/null 2>&1; then
      flock 9
      if [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; then
        exit 0
      fi
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    # The replace pins ejbca-go-client-sdk at v1.0.2: SPIRE v1.15 asks for
    # v1.1.0, which the module proxy refuses; v1.0.2 (what v1.13 uses) compiles
    # and the binaries run. For v1.13 it changes nothing.
    cat > go.mod <<MOD
module arbor.invalid/spirepeer

go 1.26

replace github.com/Keyfactor/ejbca-go-client-sdk => github.com/Keyfactor/ejbca-go-client-sdk v1.0.2
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
  )
  echo "$bin"
}

if [[ $# -eq 0 ]]; then
  set -- "${ARBOR_SPIRE_VERSION:-v1.13.3}"
elif [[ $# -eq 1 && "$1" == all ]]; then
  set -- "${supported[@]}"
fi
for v in "$@"; do
  build_one "$v"
done
