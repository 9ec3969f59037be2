#!/bin/bash
# The image's entrypoint: `conductor-entrypoint ROLE [ARGS...]`, or any command (the docker
# worker starts agent containers with `prefect flow-run execute`, which passes through).
#
# Secrets: for each NAME below, when NAME is unset and NAME_FILE names a readable file (a Docker
# secret under /run/secrets), NAME is exported from the file's first line. Nothing is logged.
set -euo pipefail

_SECRET_VARS=(
  ANTHROPIC_API_KEY
  PREFECT_API_AUTH_STRING
  PREFECT_SERVER_API_AUTH_STRING
  PREFECT_SERVER_DATABASE_PASSWORD
  CONDUCTOR_API_AUTH_STRING
  CONDUCTOR_DASHBOARD_PASSWORD
  REDIS_PASSWORD
)

load_secrets() {
  local name file value
  for name in "${_SECRET_VARS[@]}"; do
    file_var="${name}_FILE"
    file="${!file_var:-}"
    if [ -z "${!name:-}" ] && [ -n "$file" ]; then
      if [ ! -r "$file" ]; then
        echo "conductor-entrypoint: $file_var=$file is not a readable file; check the stack's secrets" >&2
        exit 2
      fi
      IFS= read -r value <"$file" || true
      export "$name=$value"
    fi
    unset "$file_var"
  done
}

redis_urls() {  # Prefect's Redis clients: the password from the redis_password secret
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    export PREFECT_REDIS_MESSAGING_PASSWORD="$REDIS_PASSWORD"
    export PREFECT_SERVER_DOCKET_URL="redis://:${REDIS_PASSWORD}@${PREFECT_REDIS_MESSAGING_HOST:-redis}:${PREFECT_REDIS_MESSAGING_PORT:-6379}/1"
    unset REDIS_PASSWORD
  fi
}

prepare_dirs() {
  mkdir -p "${HOME:-/tmp/home}" "${PREFECT_HOME:-/tmp/prefect}"
}

usage() {
  cat <<'EOF'
claude-conductor image: one image, every role of the docker tier.

  server         Prefect API and UI (no background services), on PostgreSQL + Redis
  services       Prefect background services (scheduler, automations, late runs ...)
  migrate        apply Prefect's database migrations, then exit
  configure      create/update work pools, queues, deployments, automations; then exit
  worker         worker of the agent pool: each task's engine runs here, its agent in a
                 sibling container (docker placement); first cleans up after a crash
  coordinator    process worker of the coordinator pool (fan-out parents)
  dashboard      the Conductor dashboard (Streamlit)
  scripted-model the offline scripted model (tests and demos; NOT a model)
  init-volumes   (as root) give the data folder (CONDUCTOR_HOME) to the agents' user; then
                 exit
  help           this text
Anything else runs as a command, e.g. `prefect flow-run execute` or `conductor --help`.
EOF
}

role=${1:-help}
[ "$#" -gt 0 ] && shift
load_secrets
redis_urls
prepare_dirs

case "$role" in
  server)
    # Prefect's server with Conductor's two changes (src/claude_conductor/tiers/prefect_server.py).
    exec python -m claude_conductor.tiers.prefect_server --host 0.0.0.0 --port 4200 --no-services "$@"
    ;;
  services)
    exec prefect server services start "$@"
    ;;
  migrate)
    exec prefect server database upgrade -y "$@"
    ;;
  configure)
    exec python -m claude_conductor.tiers.docker.configure configure "$@"
    ;;
  worker|coordinator)
    # The worker type comes from the pool (tiers/docker/configure.py decides it, in one place).
    # Agent slots are the pool's concurrency limit (`conductor agents scale` changes it live);
    # an engine removes its agent container before its run reports a final state.
    if [ "$role" = worker ]; then
      pool=${CONDUCTOR_WORKER__POOL:-conductor-agents}
    else
      pool=${CONDUCTOR_WORKER__COORDINATOR_POOL:-conductor-coordinators}
    fi
    # Whatever a previous run of this worker left: its engines died with it.
    python -m claude_conductor.tiers.docker.recover --pool "$pool" --role "$role"
    exec prefect worker start --pool "$pool" \
      --name "${CONDUCTOR_WORKER_NAME:-$role}" \
      --install-policy never --with-healthcheck "$@"
    ;;
  dashboard)
    # browser.serverAddress: Streamlit would otherwise look up this host's external IP at
    # start, which from the stack's internal network only times out.
    app=$(python -c 'from claude_conductor.dashboard.launch import app_path; print(app_path())')
    exec python -m streamlit run "$app" \
      --server.address 0.0.0.0 --server.port "${CONDUCTOR_DASHBOARD__PORT:-8501}" \
      --server.baseUrlPath "${CONDUCTOR_DASHBOARD_BASE_PATH:-dashboard}" \
      --server.headless true --server.fileWatcherType none \
      --browser.serverAddress "${CONDUCTOR_DASHBOARD_PUBLIC_HOST:-localhost}" \
      --browser.gatherUsageStats false --client.toolbarMode viewer "$@"
    ;;
  scripted-model)
    exec python -m claude_conductor.demo.scripted_model --host 0.0.0.0 \
      --port "${SCRIPTED_MODEL_PORT:-8765}" "$@"
    ;;
  init-volumes)
    exec /bin/bash /usr/local/bin/conductor-init-volumes "$@"
    ;;
  help|--help|-h)
    usage
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
