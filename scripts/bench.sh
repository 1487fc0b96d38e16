#!/usr/bin/env bash
# Benchmarks on loopback registries. Usage: ./scripts/bench.sh [download] [--size-mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
venv="${DTBUNDLE_VENV:-.venv}"
[ $# -gt 0 ] || set -- download
exec "$venv/bin/python" scripts/bench.py "$@"
