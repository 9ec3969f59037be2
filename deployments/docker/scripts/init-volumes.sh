#!/bin/bash
# One-shot, as root (the only step of the stack that is): hand the stack's data folder (the
# Conductor home, CONDUCTOR_HOME: a host folder mounted at the same path in the worker and in
# agent containers) to the user the worker and the agents run as. Idempotent. It is given no
# secret.
set -euo pipefail

home=${CONDUCTOR_HOME:-/var/lib/conductor}
uid=${CONDUCTOR_AGENT_UID:-10001}
gid=${CONDUCTOR_AGENT_GID:-10001}

if [ "$(id -u)" != 0 ]; then
  echo "init-volumes must run as root (user: \"0:0\" in compose.yaml)" >&2
  exit 2
fi
if [ "$uid" = 0 ]; then
  echo "CONDUCTOR_AGENT_UID=0: agents never run as root; set the uid of the owner of your repositories" >&2
  exit 2
fi
case "$home" in
  /*) ;;
  *) echo "CONDUCTOR_DATA_DIR=$home must be an absolute host path" >&2; exit 2 ;;
esac

if [ "$(stat -c %u:%g "$home")" != "$uid:$gid" ]; then
  echo "giving $home to $uid:$gid"
  chown -R "$uid:$gid" "$home"
fi
chmod 0750 "$home"
echo "data folder $home ready (the worker and agents run as $uid:$gid)"
