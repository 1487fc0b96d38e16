"""Stopping the sandbox cleanly: SIGTERM, SIGINT and SIGHUP stop every process it started.

:class:`StopSignals` records the first of these signals; the sandbox calls
:meth:`StopSignals.check` between steps (after each server started, while serving), which
raises :class:`Stopped` there, so ``finally`` blocks and exit stacks run (Python's default
for SIGTERM and SIGHUP is to die on the spot, leaving the registries running and the
temporary directory behind). The handler itself raises nothing: an exception raised from a
signal handler lands wherever the main thread happens to be (inside ``subprocess.Popen``,
or holding a lock), and cleanup could then hang.
:func:`stop_stray_children` is the last sweep: any child process still running (one a
signal caught half-started, between ``fork`` and its ``Popen`` object) is stopped too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(BaseException):  # not an Exception: the way the sandbox is asked to stop
    """A stop signal arrived; raised in the main thread wherever it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Install the handlers; the first signal is kept until :meth:`check` raises it."""

    def __init__(self) -> None:
        self.stopping = False  # set when cleanup begins: later signals change nothing
        self.requested: int | None = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None and not self.stopping:
            self.requested = signum

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop signal arrived (call between steps)."""
        if self.requested is not None and not self.stopping:
            raise Stopped(self.requested)


def child_pids(pid: int | str = "self") -> set[int]:
    """The live child processes of ``pid`` (every thread's, from ``/proc``; Linux)."""
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found.update(int(p) for p in path.read_text().split())
    return found


def stop_stray_children(timeout: float = 10.0) -> None:
    """Terminate (then kill) and reap every child process still running."""
    strays = child_pids()
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in strays:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # already reaped
                break
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate ``process`` and reap it; kill it if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
