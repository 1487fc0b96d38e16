#!/usr/bin/env bash
# The main job end to end on an embedded default: start local sample registries on
# 127.0.0.1, seed them with signed multi-arch sample images, and run dtbundle on them.
# Arguments go to the demo (e.g. ./scripts/demo.sh --keep to leave the registries up).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
venv="${DTBUNDLE_VENV:-.venv}"
exec "$venv/bin/python" -m dtbundle.sandbox demo "$@"
