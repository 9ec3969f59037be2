#!/bin/bash
# PostgreSQL for Prefect, as the `postgres` user: on an empty data volume, initdb with the
# password from $POSTGRES_PASSWORD_FILE (a Docker secret), create role and database
# $POSTGRES_USER/$POSTGRES_DB, then run the server in the foreground on all interfaces of the
# stack's internal network (password auth only; no trust except the local socket).
set -euo pipefail
data=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-prefect}
db=${POSTGRES_DB:-prefect}
pwfile=${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}

marker="$data/.conductor-initialized"
if [ -s "$data/PG_VERSION" ] && [ ! -e "$marker" ]; then
  # A first initialization that did not finish (killed, failed): start it over.
  echo "conductor-postgres: $data holds an unfinished initialization; starting it over"
  find "$data" -mindepth 1 -delete
fi
if [ ! -s "$data/PG_VERSION" ]; then
  if [ ! -s "$pwfile" ]; then
    echo "conductor-postgres: no password in $pwfile (secret postgres_password); refusing to initialize" >&2
    exit 2
  fi
  echo "conductor-postgres: initializing $data"
  tmp=$(mktemp)
  head -n1 "$pwfile" | tr -d '\n' >"$tmp"
  initdb -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile="$tmp" -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '*'
unix_socket_directories = '/tmp'
max_connections = 200
shared_buffers = 128MB
log_min_messages = warning
CONF
  echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
  pg_ctl -D "$data" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  password=$(head -n1 "$pwfile" | tr -d '\n')
  psql -v ON_ERROR_STOP=1 -q -h /tmp -U postgres -d postgres \
    -v user="$user" -v db="$db" -v password="$password" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
\c :"db"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
  pg_ctl -D "$data" -m fast -w stop >/dev/null
  rm -f "$tmp"
  date -u +%FT%TZ >"$marker"
  echo "conductor-postgres: database $db ready"
fi
exec postgres -D "$data"
