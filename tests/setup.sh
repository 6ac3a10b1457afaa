#!/usr/bin/env bash
# Installs what the tests need on a Debian 12 machine: the lab's DNS servers, dnsperf for the
# benchmark, InfluxDB 1.6, VictoriaMetrics, Alertmanager, shellcheck (the compose stack's init
# script), and the project with its test extras. Needs root (apt-get, port 53, loopback aliases).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  unbound bind9 bind9-utils bind9-dnsutils knot-resolver pdns-recursor nsd knot knot-dnsutils
  ldnsutils dnsperf iproute2 procps influxdb influxdb-client victoria-metrics prometheus-alertmanager
  shellcheck
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  # Packaged services must not start: the lab runs its own instances on 127.53.x.x only.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test,fast]"
