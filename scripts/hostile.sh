#!/usr/bin/env bash
# The hostile-bundle corpus (tests/test_hostile_corpus.py), in full: every case through
# `import` into a real registry, `import --to-oci`, `verify` and `inspect`, repeated ROUNDS
# times (default 3). Each must end with its exit code and one clean line, land no manifest or
# tag and leave no file behind. CI runs the `import` column once, in the normal suite.
#   ./scripts/hostile.sh [ROUNDS] [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
./scripts/setup.sh
venv="${DTBUNDLE_VENV:-.venv}"
DTBUNDLE_CORPUS=full DTBUNDLE_CORPUS_ROUNDS="$rounds" exec "$venv/bin/python" -m pytest -n "${DTBUNDLE_TEST_WORKERS:-2}" \
    tests/test_hostile_corpus.py "$@"
