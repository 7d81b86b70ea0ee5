#!/usr/bin/env bash
# Set this Debian 12 machine up for sendfleet (idempotent): Debian packages and the Python venv (.venv).
# Needs root. Starts no service: the lab starts its own servers on its own addresses.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  systemd-container debootstrap iproute2 nftables openssh-client   # the lab's hosts and network
  knot knot-dnsutils rbldnsd unbound bind9-dnsutils                 # lab DNS: authoritative, blocklists, resolver
  apt-cacher-ng                                                     # package proxy for lab hosts
  swaks dnsperf                                                     # test and benchmark clients
  postgresql                                                        # the feedback store's tests (a throwaway cluster)
  prometheus                                                        # promtool: the alert rules' gate
  python3-venv
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "setup: installing ${missing[*]} needs root" >&2; exit 2; }
  echo "setup: installing ${missing[*]}"
  # The packages' own services must not start: the lab runs its servers on lab addresses itself.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1; fi
  trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# prometheus brings its server and Alertmanager: this machine only needs promtool, so neither runs here; nor
# postgresql's main cluster (the feedback tests start their own on a unix socket)
if [ "$(id -u)" -eq 0 ]; then
  for unit in prometheus prometheus-alertmanager postgresql; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then systemctl disable --quiet "$unit" 2>/dev/null || true; fi
    if systemctl is-active --quiet "$unit" 2>/dev/null; then systemctl stop "$unit" || true; fi
  done
fi

# Python 3.11-3.13 (pyproject.toml's requires-python, what ansible-core 2.19 supports): a venv on any of them is
# kept; otherwise it is made with the first of python3, python3.13, python3.12, python3.11 in that range.
in_range='import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)'
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "$in_range" 2>/dev/null; then
  python=""
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$in_range" 2>/dev/null; then
      python=$candidate
      break
    fi
  done
  [ -n "$python" ] || { echo "setup: needs Python 3.11, 3.12 or 3.13 (python3 is $(python3 -V 2>&1))" >&2; exit 2; }
  rm -rf .venv
  "$python" -m venv .venv
fi
stamp=.venv/.sendfleet-deps
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  cp pyproject.toml "$stamp"
fi
echo "setup: ready (.venv/bin/sendfleet)"
