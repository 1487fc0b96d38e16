"""The ``dtbundle`` command line: options in, settings to the library, typed results out as text."""

from dtbundle.cli.app import app, main

__all__ = ["app", "main"]
