"""Run dtbundle as a user does and check what it says.

``run`` starts ``python -m dtbundle`` in a subprocess: for tests where the process boundary
matters (signals, a real stdin pipe, secrets that must not reach any output). ``run_in_process``
calls the same console entry point, :func:`dtbundle.cli.main`, inside the test process, with the
same environment, and returns the same kind of result: for argument handling, help, usage
errors and the version, where a fresh interpreter per call only costs time.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

import pytest

from dtbundle.registry import RegistryClient

# What every dtbundle run sees: no DTBUNDLE_* variables of the developer's shell, and no
# credentials from the developer's Docker or containers config files.
ISOLATED_ENV = {"HOME": "/nonexistent-home", "REGISTRY_AUTH_FILE": "/nonexistent/auth.json"}


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a dtbundle run: this process's, isolated as above, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("DTBUNDLE_")}
    full.update(ISOLATED_ENV)
    full.update(env or {})
    return full


def run(*args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m dtbundle ARGS`` in a subprocess, ``stdin`` piped in, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "dtbundle", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(env),
        check=False,
    )


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Make os.environ equal ``env`` for the duration, then put every changed variable back."""
    saved = dict(os.environ)
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _exit_status(code: object, stderr: io.StringIO) -> int:
    """The status the interpreter would exit with for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    stderr.write(f"{code}\n")  # like the interpreter: print the object, exit 1
    return 1


def run_in_process(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dtbundle ARGS`` through :func:`dtbundle.cli.main`, in this process.

    ``os.environ`` (as :func:`cli_env` builds it), stdin (empty, not a terminal), stdout and
    stderr are swapped for the call and restored afterwards. The result is a
    CompletedProcess whose returncode is the status ``main()`` exits with.
    """
    from dtbundle.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_stdin, sys.stdin = sys.stdin, io.StringIO("")
    status = 0
    try:
        with _environment(cli_env(env)), redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                main(list(args))
            except SystemExit as exc:
                status = _exit_status(exc.code, stderr)
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["dtbundle", *args], status, stdout.getvalue(), stderr.getvalue())


def record_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make every RegistryClient built from now on (by the CLI too) record its backoff waits
    in the returned list instead of sleeping; for in-process runs that hit retries."""
    sleeps: list[float] = []
    original: Callable[..., None] = RegistryClient.__init__

    def init(self: RegistryClient, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("sleep", sleeps.append)
        original(self, *args, **kwargs)

    monkeypatch.setattr(RegistryClient, "__init__", init)
    return sleeps


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """Exit ``code``, no traceback, and exactly one ``dtbundle: error:`` line on stderr; returns it."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dtbundle: error: "), proc.stderr
    return lines[0]
