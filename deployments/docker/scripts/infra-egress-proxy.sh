#!/bin/bash
# The agents' only way out: tinyproxy (Debian's tinyproxy-bin) forwarding to the hosts of
# $EGRESS_ALLOW (comma- or space-separated exact host names) and refusing everything else with
# 403: other hosts, IP addresses, the stack's services, the host. CONNECT (HTTPS) to 443 only.
set -euo pipefail
run=/tmp/egress
mkdir -p "$run"
allow=${EGRESS_ALLOW:-}
: >"$run/allow"
for host in ${allow//,/ }; do
  case "$host" in
    *[!A-Za-z0-9.-]*|"") echo "conductor-egress-proxy: $host is not a host name; fix CONDUCTOR_EGRESS_ALLOW" >&2; exit 2 ;;
  esac
  printf '%s\n' "${host,,}" >>"$run/allow"
done
cat >"$run/tinyproxy.conf" <<CONF
Port 8888
Listen 0.0.0.0
Timeout 600
MaxClients 200
LogLevel Notice
PidFile "$run/tinyproxy.pid"
DisableViaHeader Yes
Filter "$run/allow"
FilterURLs Off
FilterType fnmatch
FilterCaseSensitive No
FilterDefaultDeny Yes
ConnectPort 443
CONF
echo "conductor-egress-proxy: agents may reach: $(tr '\n' ' ' <"$run/allow")"
exec tinyproxy -d -c "$run/tinyproxy.conf"
