#!/usr/bin/env bash
# Make the stack's secrets for running compose.yaml by hand (`conductor up --tier docker` does
# the same itself): random passwords, made once and never replaced (PostgreSQL keeps its first
# one), and the Anthropic API key from $ANTHROPIC_API_KEY (empty without it).
#   ./make-secrets.sh [FOLDER]        default ./secrets
# The folder is 0700; the files are 0644 because compose secrets are bind mounts that the
# non-root services must read.
set -euo pipefail
dir=${1:-${CONDUCTOR_SECRETS_DIR:-$(dirname "$0")/secrets}}
mkdir -p "$dir"
chmod 0700 "$dir"
random() { head -c 48 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-"$1"; }
put() {  # put NAME VALUE: only when missing
  [ -s "$dir/$1" ] || printf '%s\n' "$2" >"$dir/$1"
  chmod 0644 "$dir/$1"
}
put postgres_password "$(random 32)"
put prefect_auth "conductor:$(random 32)"
put dashboard_password "$(random 24)"
put redis_password "$(random 32)"
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  printf '%s\n' "$ANTHROPIC_API_KEY" >"$dir/anthropic_api_key"
fi
[ -e "$dir/anthropic_api_key" ] || : >"$dir/anthropic_api_key"
chmod 0644 "$dir/anthropic_api_key"
echo "secrets in $dir: Prefect UI/API user:password in prefect_auth, dashboard password in dashboard_password"
