#!/usr/bin/env bash
# Longer, randomised run of the bundle-reader fuzz tests (tests/test_fuzz.py): the JSON bounds, the
# catalog and signature-file parsers, and the streaming reader on mutated real bundles. CI runs the
# same properties briefly with fixed examples; this runs many random ones per property.
# Usage: ./scripts/fuzz.sh [EXAMPLES]   (default 20000 per property; or set DTBUNDLE_FUZZ_EXAMPLES)
# A failure prints the input that broke a property and a @reproduce_failure blob to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DTBUNDLE_VENV:-.venv}"
"$venv/bin/python" -c "import hypothesis" 2>/dev/null || ./scripts/setup.sh >/dev/null  # installs the test extras
export DTBUNDLE_FUZZ_EXAMPLES="${1:-${DTBUNDLE_FUZZ_EXAMPLES:-20000}}"
exec "$venv/bin/python" -m pytest -q -n 0 -p no:cacheprovider -o timeout=0 --hypothesis-show-statistics tests/test_fuzz.py
