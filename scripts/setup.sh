#!/usr/bin/env bash
# Install everything dtbundle needs on a fresh Debian 12 machine, idempotently:
# Debian packages (docker-registry, skopeo, zstd, openssl, python3-venv, tinyproxy), a venv in .venv,
# and the project with its test extras. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
# zstd and openssl: the tests check that bundles open and verify with standard tools too
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# tinyproxy: the HTTP proxy the proxy tests start on their own port. Debian 12's tinyproxy-bin is
# the executable alone; the tinyproxy package's postinst enables and starts a system daemon (port
# 8888), so that one is only the fallback where no -bin package exists, and its daemon is stopped
# and disabled right after.
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || missing+=(tinyproxy-bin)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  stop_tinyproxy_service=0
  if [[ " ${missing[*]} " == *" tinyproxy-bin "* ]] && ! apt-cache show tinyproxy-bin >/dev/null 2>&1; then
    missing=("${missing[@]/#tinyproxy-bin/tinyproxy}")
    stop_tinyproxy_service=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$stop_tinyproxy_service" -eq 1 ]; then
    echo "setup: stopping and disabling the tinyproxy service the package started"
    if [ -d /run/systemd/system ]; then
      "${sudo_cmd[@]}" systemctl disable --now tinyproxy.service >/dev/null 2>&1 || true
    else
      "${sudo_cmd[@]}" invoke-rc.d tinyproxy stop >/dev/null 2>&1 || "${sudo_cmd[@]}" service tinyproxy stop >/dev/null 2>&1 || true
      "${sudo_cmd[@]}" update-rc.d tinyproxy disable >/dev/null 2>&1 || true
    fi
  fi
fi

venv="${DTBUNDLE_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
echo "setup: ready ($("$venv/bin/dtbundle" --version), $(skopeo --version), docker-registry $(docker-registry --version 2>&1 | awk '{print $3}'), $(tinyproxy -v 2>&1 | head -1))"
