#!/bin/bash
# Redis for Prefect's messaging, as the `redis` user, with the password of the redis_password
# secret: written to a config file on the tmpfs (never in argv, where `ps` would show it).
set -euo pipefail
pwfile=${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}
if [ ! -s "$pwfile" ]; then
  echo "conductor-redis: no password in $pwfile (secret redis_password); refusing to start without one" >&2
  exit 2
fi
umask 077
conf=/tmp/redis.conf
{
  echo "bind 0.0.0.0"
  echo "port 6379"
  echo "protected-mode yes"
  echo "save \"\""
  echo "appendonly no"
  echo "dir /tmp"
  printf 'requirepass "%s"\n' "$(head -n1 "$pwfile" | tr -d '\n"\\')"
} >"$conf"
exec redis-server "$conf"
