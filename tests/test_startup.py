"""Start-up cost: `dtbundle --help` (and a command's `--help`) loads the CLI, not the library behind
it. Each command imports what it uses when it runs, so no HTTP client, crypto, TUF, zstd or
Dynatrace code is loaded to print help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("httpx", "cryptography", "tuf", "zstandard", "dtbundle.dynatrace.selection", "dtbundle.registry")

PROBE = """
import json, sys
from dtbundle.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["export", "--help"], ["import", "--help"], ["verify", "--help"]])
def test_help_loads_no_library_it_does_not_need(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, timeout=60
    )
    assert "Usage" in proc.stdout, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == [], proc.stderr
