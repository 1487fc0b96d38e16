#!/usr/bin/env bash
# Install what is missing, then run the linters and the whole test suite.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -k auth -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
venv="${DTBUNDLE_VENV:-.venv}"
echo "test: ruff"
"$venv/bin/ruff" check src tests scripts
echo "test: mypy"
"$venv/bin/mypy"
echo "test: pytest"
# Two workers by default (DTBUNDLE_TEST_WORKERS=0 runs in one process, e.g. for -x or pdb).
exec "$venv/bin/python" -m pytest -n "${DTBUNDLE_TEST_WORKERS:-2}" "$@"
