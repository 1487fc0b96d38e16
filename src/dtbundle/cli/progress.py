"""Progress on stderr for export, import and verify: the CLI's side of :class:`dtbundle.progress.Progress`.

* On a terminal (:class:`TerminalProgress`): one line per step as it begins
  (``dtbundle: downloading 40 blobs``) and, for steps that move bytes, a tqdm bar below
  it (percent, bytes of total, rate, time left), cleared when the step ends.
* Without a terminal (CI, nohup, a pipe; :class:`LineProgress`): one line every
  ``interval`` seconds (default 5, ``$DTBUNDLE_PROGRESS_INTERVAL`` to change it) naming the
  step, its percentage, bytes of total and rate; a command that ends sooner prints none.
* ``--quiet``: nothing.

Sizes are IEC (KiB, MiB, GiB) as everywhere in dtbundle (:func:`dtbundle.progress.format_bytes`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

from dtbundle.errors import UsageError
from dtbundle.progress import NO_PROGRESS, Progress, format_bytes

DEFAULT_INTERVAL = 5.0
INTERVAL_VARIABLE = "DTBUNDLE_PROGRESS_INTERVAL"
BAR_FORMAT = "  {percentage:3.0f}%|{bar}| {done} of {whole}, {speed} [{elapsed}<{remaining}]"


class _Bar(tqdm):  # type: ignore[misc]  # tqdm is untyped
    """A tqdm bar whose byte figures are IEC with a space (``1.5 GiB``), like the rest of the output."""

    @property
    def format_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = super().format_dict
        values.update(
            done=format_bytes(values["n"]),
            whole=format_bytes(values["total"] or 0),
            speed=f"{format_bytes(values['rate'] or 0)}/s",
        )
        return values


class TerminalProgress:
    """Phase lines and a byte bar on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._bar: _Bar | None = None

    def phase(self, text: str) -> None:
        with self._lock:
            self._close_bar()
            self.stream.write(f"dtbundle: {text}\n")
            self.stream.flush()

    def start(self, total_bytes: int) -> None:
        with self._lock:
            self._close_bar()
            self._bar = _Bar(
                total=total_bytes, file=self.stream, leave=False, dynamic_ncols=True, bar_format=BAR_FORMAT
            )

    def advance(self, n: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(n)

    def close(self) -> None:
        with self._lock:
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class LineProgress:
    """One progress line every ``interval`` seconds, from a background thread, while a command runs."""

    def __init__(
        self, stream: TextIO, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream, self.interval, self._clock = stream, interval, clock
        self._lock = threading.Lock()
        self._text, self._since = "starting", clock()
        self._total: int | None = None
        self._done, self._counting_since = 0, self._since
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dtbundle-progress", daemon=True)
        self._thread.start()

    def phase(self, text: str) -> None:
        with self._lock:
            self._text, self._since, self._total = text, self._clock(), None

    def start(self, total_bytes: int) -> None:
        with self._lock:
            self._total, self._done, self._counting_since = total_bytes, 0, self._clock()

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += n

    def line(self) -> str:
        """The line this display prints now."""
        with self._lock:
            now = self._clock()
            if self._total is None:
                return f"dtbundle: {self._text} ({now - self._since:.0f} s)"
            done, total = max(0, self._done), self._total
            rate = done / max(now - self._counting_since, 1e-3)
            percent = 100.0 * done / total if total else 100.0
            left = f", about {_duration((total - done) / rate)} left" if rate > 0 and done < total else ""
            return (
                f"dtbundle: {self._text}: {percent:.0f}% ({format_bytes(done)} of {format_bytes(total)}, "
                f"{format_bytes(rate)}/s{left})"
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.stream.write(self.line() + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: stop reporting, keep working
                return


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def interval_from_environment() -> float:
    """``$DTBUNDLE_PROGRESS_INTERVAL`` in seconds, else the default."""
    value = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not value:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise UsageError(f"{INTERVAL_VARIABLE} must be a number of seconds above 0, not {value!r}")
    return seconds


@contextlib.contextmanager
def progress_display(quiet: bool) -> Iterator[Progress]:
    """The display for one command on stderr (nothing with ``--quiet``), closed when the block ends."""
    if quiet:
        yield NO_PROGRESS
        return
    stream = sys.stderr
    display = TerminalProgress(stream) if stream.isatty() else LineProgress(stream, interval_from_environment())
    try:
        yield display
    finally:
        display.close()
