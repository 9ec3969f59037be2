#!/usr/bin/env bash
# Build the docker tier's two images with the classic builder (no BuildKit/buildx needed):
#   claude-conductor:<version> (+ :latest)   every Conductor role, from Dockerfile
#   claude-conductor-infra:latest             PostgreSQL, Redis, nginx, tinyproxy (infra.Dockerfile)
# CONDUCTOR_IMAGE_TAG=x builds claude-conductor:x and claude-conductor-infra:x instead (e.g. to
# test a branch on an engine other people use; point CONDUCTOR_DOCKER__IMAGE/INFRA_IMAGE at them).
# The build host's CA bundle ($SSL_CERT_FILE) is copied into the context for the build only
# (an HTTPS-intercepting proxy needs it) and removed afterwards; it is never committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

export DOCKER_BUILDKIT=0
base=${CONDUCTOR_BASE_IMAGE:-conductor-base:bookworm}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
image=${CONDUCTOR_IMAGE_NAME:-claude-conductor}
tag=${CONDUCTOR_IMAGE_TAG:-}
infra=${CONDUCTOR_INFRA_IMAGE:-claude-conductor-infra:${tag:-latest}}

bundle="$here/ca-bundle.crt"
made_bundle=
cleanup() { [ -n "$made_bundle" ] && rm -f "$bundle"; return 0; }
trap cleanup EXIT
if [ -n "${SSL_CERT_FILE:-}" ] && [ -s "$SSL_CERT_FILE" ] && [ ! -e "$bundle" ]; then
  cp "$SSL_CERT_FILE" "$bundle"
  made_bundle=1
fi

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
build() {  # build NAME ARGS...: quiet unless it fails
  local name=$1; shift
  local out; out=$(mktemp)
  log "building $name (base $base)"
  if ! docker build --build-arg "BASE_IMAGE=$base" "$@" >"$out" 2>&1; then
    tail -40 "$out"; rm -f "$out"; log "building $name failed"; exit 1
  fi
  rm -f "$out"
}
build "$infra" -f deployments/docker/infra.Dockerfile -t "$infra" deployments/docker
if [ -n "$tag" ]; then
  build "$image:$tag" -f deployments/docker/Dockerfile -t "$image:$tag" .
else
  build "$image:$version" -f deployments/docker/Dockerfile -t "$image:$version" -t "$image:latest" .
fi
log "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^($image|${infra%%:*}):" | tr '\n' ' ')"
