#!/bin/bash
# nginx in front of the stack, as an unprivileged user. Writes the password files from the
# stack's secrets (hashed; the plain text never touches the disk), then the configuration from
# nginx.conf.template (the TLS server only when a certificate is mounted), then runs nginx.
#   Prefect UI + API: realm "Prefect", the user:password of $PREFECT_AUTH_FILE
#   dashboard:        realm "Conductor dashboard", $DASHBOARD_USER + $DASHBOARD_PASSWORD_FILE
set -euo pipefail
run=/tmp/nginx
mkdir -p "$run"/client "$run"/proxy "$run"/fastcgi "$run"/uwsgi "$run"/scgi
umask 077

htpasswd_line() {  # htpasswd_line USER PASSWORD
  printf '%s:%s\n' "$1" "$(printf '%s' "$2" | openssl passwd -6 -stdin)"
}
need() { [ -s "$1" ] || { echo "conductor-nginx: $2 is missing or empty ($1)" >&2; exit 2; }; }

need "${PREFECT_AUTH_FILE:=/run/secrets/prefect_auth}" "the Prefect API credentials (secret prefect_auth, user:password)"
need "${DASHBOARD_PASSWORD_FILE:=/run/secrets/dashboard_password}" "the dashboard password (secret dashboard_password)"
auth=$(head -n1 "$PREFECT_AUTH_FILE" | tr -d '\n')
case "$auth" in *:*) ;; *) echo "conductor-nginx: prefect_auth must be user:password" >&2; exit 2 ;; esac
htpasswd_line "${auth%%:*}" "${auth#*:}" >"$run/prefect.htpasswd"
htpasswd_line "${DASHBOARD_USER:-conductor}" "$(head -n1 "$DASHBOARD_PASSWORD_FILE" | tr -d '\n')" \
  >"$run/dashboard.htpasswd"

conf=$run/nginx.conf
templates=${NGINX_TEMPLATES:-/etc/conductor/nginx}
cert=${TLS_CERT_FILE:-/run/secrets/tls_cert}
key=${TLS_KEY_FILE:-/run/secrets/tls_key}
if [ -s "$cert" ] && [ -s "$key" ]; then
  tls=on
  echo "conductor-nginx: TLS on port 8443 with $cert"
else
  tls=off
fi
render() {  # render TEMPLATE OUT: keep the TLS block only with a certificate; fill in paths
  awk -v tls="$tls" -v cert="$cert" -v key="$key" -v run="$run" '
    /#BEGIN_TLS/ { skip = (tls != "on"); next }
    /#END_TLS/ { skip = 0; next }
    !skip { gsub("@CERT@", cert); gsub("@KEY@", key); gsub("@RUN@", run); print }
  ' "$1" >"$2"
}
render "$templates/locations.conf.template" "$run/locations.conf"
render "$templates/nginx.conf.template" "$conf"
nginx -e stderr -t -q -c "$conf"
exec nginx -e stderr -c "$conf" -g 'daemon off;'
