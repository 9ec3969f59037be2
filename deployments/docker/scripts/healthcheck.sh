#!/bin/bash
# The image's HEALTHCHECK: asks the role's own HTTP endpoint on loopback, with bash alone (no
# curl in the image). Roles without an endpoint (one-shot steps, agent containers) are healthy
# while they run.
set -u
role=$(tr '\0' ' ' </proc/1/cmdline 2>/dev/null)

probe() {  # probe PORT PATH: HTTP 200 from 127.0.0.1:PORT/PATH within the timeout
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
  local status
  IFS= read -r -t 4 status <&3 || return 1
  exec 3<&-
  case "$status" in *" 200 "*) return 0 ;; *) return 1 ;; esac
}

case "$role" in
  *" server"*|*"prefect server start"*) probe 4200 /api/health ;;
  *" worker"*|*" coordinator"*|*"prefect worker start"*) probe "${PREFECT_WORKER_WEBSERVER_PORT:-8080}" /health ;;
  *" dashboard"*) probe "${CONDUCTOR_DASHBOARD__PORT:-8501}" "/${CONDUCTOR_DASHBOARD_BASE_PATH:-dashboard}/_stcore/health" ;;
  *" scripted-model"*) probe "${SCRIPTED_MODEL_PORT:-8765}" /health ;;
  *) exit 0 ;;
esac
