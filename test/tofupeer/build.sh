#!/usr/bin/env bash
# Builds OpenTofu's `tofu` from the Go module proxy for the Terraform provider
# tests and caches it under a directory keyed by version ($cache/<version>/bin),
# beside the SPIRE peers (test/spirepeer/build.sh) under the same cache root.
#
#   build.sh              builds $ARBOR_TOFU_VERSION (default v1.10.6), prints its bin directory
#
#   ARBOR_TOFU_VERSION  OpenTofu version (default v1.10.6)
#   ARBOR_TOFU_CACHE    cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/arbor/tofu)
#
# The first build takes about 10 minutes on 2 cores, nothing afterwards.
# OpenTofu is a main module that is not meant to be a dependency (its go.mod
# has replace directives), so the build copies the module's source out of the
# module cache and builds ./cmd/tofu inside it, resolving what its go.sum does
# not pin through the proxy (GOFLAGS=-mod=mod, GONOSUMDB='*').
set -euo pipefail

version="${ARBOR_TOFU_VERSION:-v1.10.6}"
cache="${ARBOR_TOFU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/arbor/tofu}"
bin="$cache/$version/bin"
if [[ -x "$bin/tofu" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
(
  exec 9>"$cache/$version/.build.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 9
    if [[ -x "$bin/tofu" ]]; then
      exit 0
    fi
  fi
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  echo "tofupeer: building tofu $version (first run only; cached in $bin)" >&2
  dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/opentofu/opentofu@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  if [[ -z "$dir" || ! -d "$dir" ]]; then
    echo "tofupeer: the module proxy did not give github.com/opentofu/opentofu@$version" >&2
    exit 1
  fi
  cp -r "$dir" "$work/src"
  chmod -R u+w "$work/src"
  cd "$work/src"
  GONOSUMDB='*' GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go build -trimpath -ldflags "-s -w" -o "$bin/tofu.tmp" ./cmd/tofu >&2
  mv "$bin/tofu.tmp" "$bin/tofu"
)
echo "$bin"
