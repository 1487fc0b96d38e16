"""Allow ``python -m dtbundle``."""

from dtbundle.cli import main

main()
