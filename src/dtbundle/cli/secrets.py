"""Secrets and files the user points at: typed hidden at a terminal, or read from a file or an
environment variable, never taken from the command line (where `ps` and shell history see them)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from dtbundle.errors import UsageError


def prompt_secret(prompt: str) -> str | None:
    """A secret typed at the terminal, not echoed (``getpass``); None when standard input is not
    a terminal (then nobody can type it) or at end of input."""
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(prompt)
    except EOFError:
        return None


def read_secret(path: Path | None, variable: str, what: str) -> str:
    """A token from a file or an environment variable; never from the command line."""
    if path is not None:
        value = read_file(path, what).decode("utf-8", "replace").strip()
    else:
        value = os.environ.get(variable, "").strip()
    if not value:
        raise UsageError(f"{what}: set ${variable} or give a token file")
    return value


def read_file(path: Path, what: str) -> bytes:
    """A file the user named (a key, a root, a token): unreadable is a usage error naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
