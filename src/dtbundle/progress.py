"""Progress reporting, library side: what long-running calls say while they work.

``run_export``, ``run_import`` and :func:`dtbundle.verify.verify` take a :class:`Progress`
and call ``phase`` when a step begins ("resolving 5 images", "downloading 40 blobs
(2.0 GiB)", ...), ``start`` when the current step starts counting a known number of
bytes, and ``advance`` as bytes arrive, are read or are sent. ``advance`` may be called
from several threads at once (export downloads concurrently) and with a negative
count (a download that starts over): implementations must accept both. The library
never prints; the CLI draws progress (:mod:`dtbundle.cli.progress`). Sizes are shown in
IEC units (KiB, MiB, GiB) everywhere, through :func:`format_bytes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    def phase(self, text: str) -> None:
        """A new step begins (ends any byte count of the step before)."""

    def start(self, total_bytes: int) -> None:
        """The current step will move ``total_bytes`` bytes."""

    def advance(self, n: int) -> None:
        """``n`` more bytes of the current step are done (thread-safe; may be negative)."""


class NoProgress:
    """Reports nothing: the default for library callers, and ``--quiet``."""

    def phase(self, text: str) -> None:
        pass

    def start(self, total_bytes: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()


def byte_counter(progress: Progress) -> Callable[[int], Callable[[int], None]]:
    """``progress`` as a factory of byte counters (``factory(total)(n)``), for readers that take one."""

    def factory(total: int) -> Callable[[int], None]:
        progress.start(total)
        return progress.advance

    return factory


def format_bytes(size: float) -> str:
    """``size`` in IEC units: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # not reached: TiB ends the loop


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(|B|[KMGT]i?B?)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str) -> int:
    """``4GiB``, ``4.7GB``, ``700MiB``, ``64k``, ``4096`` as bytes (IEC units are powers of 1024, SI
    units of 1000, a bare K/M/G/T is IEC); ValueError for anything else."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text[:40]!r} is not a size such as 4GiB, 700MiB or 4.7GB")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit in ("", "b"):
        factor = 1
    elif unit.endswith("ib") or len(unit) == 1:
        factor = 1024 ** ("kmgt".index(unit[0]) + 1)
    else:
        factor = _UNITS[unit[0]]
    return int(number * factor)


def plural(n: int, noun: str) -> str:
    """``1 image``, ``5 images``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
