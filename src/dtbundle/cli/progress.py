"""Progress display on stderr: a byte counter per long-running step, closed when the step ends."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

ProgressFactory = Callable[[int], Callable[[int], None]]


@contextlib.contextmanager
def progress_display(quiet: bool, description: str) -> Iterator[ProgressFactory | None]:
    """A factory of tqdm byte counters (only on a terminal, without --quiet); every bar it made
    is closed when the block ends, however it ends."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    bars: list[tqdm] = []

    def factory(total: int) -> Callable[[int], None]:
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=description,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        bars.append(bar)
        return lambda n: bar.update(n) and None

    try:
        yield factory
    finally:
        for bar in bars:
            bar.close()
