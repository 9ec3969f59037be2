#!/bin/bash
# One-shot, as root (the only step of the stack that is): hand the Conductor home volume to the
# user agents run as, and put the agents' Anthropic API key into the agent-secrets volume (the
# only place agent containers read it from). Idempotent.
set -euo pipefail

home=${CONDUCTOR_HOME:-/var/lib/conductor}
secrets=${AGENT_SECRETS_DIR:-/run/conductor-secrets}
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

if [ "$(stat -c %u:%g "$home")" != "$uid:$gid" ]; then
  echo "giving $home to $uid:$gid"
  chown -R "$uid:$gid" "$home"
fi
chmod 0750 "$home"

key=${ANTHROPIC_API_KEY:-}
if [ -z "$key" ]; then
  echo "no ANTHROPIC_API_KEY (secret anthropic_api_key is empty): agents can only use a model endpoint that needs no key" >&2
fi
umask 077
printf '%s\n' "$key" >"$secrets/anthropic_api_key.tmp"
chown "$uid:$gid" "$secrets/anthropic_api_key.tmp"
chmod 0400 "$secrets/anthropic_api_key.tmp"
mv -f "$secrets/anthropic_api_key.tmp" "$secrets/anthropic_api_key"
chown "$uid:$gid" "$secrets"
chmod 0500 "$secrets"
echo "volumes ready (agents run as $uid:$gid)"
