#!/usr/bin/env bash
# Benchmarks on loopback registries. Usage: ./scripts/bench.sh [download|export|import|suite|proxy] [options]
#   ./scripts/bench.sh suite [--sets 1.2gb,5gb,latency] [--rounds 5] [--latency-ms 40]   (see scripts/bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
venv="${DTBUNDLE_VENV:-.venv}"
[ $# -gt 0 ] || set -- download
exec "$venv/bin/python" scripts/bench.py "$@"
