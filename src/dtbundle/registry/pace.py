"""Time bounds of one transfer: the stall rule and the overall deadline (``RegistryLimits``).

A :class:`Pace` watches the bytes of one transfer — a response body read, a request body
sent, a blob download with all its ``Range`` resumes, a chunked upload with all its PATCHes.
Every window of ``stall_timeout`` seconds must move more than ``max_stall_bytes`` bytes
(a server trickling a byte a second is stalled after one window), and no read or write may
wait longer than ``stall_timeout`` for a byte (the session sets the socket timeouts so); a
stall is :class:`TransferStalledError`, which callers retry or resume like a dropped
connection. The whole transfer must end within ``max_transfer_seconds``:
:class:`TransferDeadlineError`, never retried.

:class:`PacedStream` applies a pace to a response body, :func:`paced_body` to a request body
(sent in pieces of at most 64 KiB, so that each socket write is one small step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from dtbundle.errors import TransferDeadlineError, TransferStalledError
from dtbundle.limits import RegistryLimits

# Request bodies are written in pieces of at most this many bytes: a socket write of one
# piece must finish within stall_timeout (the write timeout).
PIECE_BYTES = 64 * 1024
STALL_HINT = "--stall-timeout SECONDS sets the window"
DEADLINE_HINT = "--transfer-deadline SECONDS changes it"


class Pace:
    """The stall window and the deadline of one transfer (thread-confined: one per transfer)."""

    def __init__(self, limits: RegistryLimits, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.what = what
        self._clock = clock
        self._deadline = clock() + limits.max_transfer_seconds
        self.start_window()

    def start_window(self) -> None:
        """A new attempt (or a response's headers arrived): progress is measured from now."""
        self._window_start = self._clock()
        self._window_bytes = 0

    def check_deadline(self) -> None:
        """TransferDeadlineError once the transfer's deadline has passed."""
        if self._clock() > self._deadline:
            raise TransferDeadlineError(
                f"{self.what} did not finish within the transfer deadline of "
                f"{self.limits.max_transfer_seconds:g} s ({DEADLINE_HINT})"
            )

    def moved(self, count: int) -> None:
        """``count`` bytes went through; raises when the window or the deadline is broken."""
        self.check_deadline()
        self._window_bytes += count
        elapsed = self._clock() - self._window_start
        if elapsed < self.limits.stall_timeout:
            return
        if self._window_bytes <= self.limits.max_stall_bytes:
            raise TransferStalledError(
                f"{self.what} stalled: {self._window_bytes} bytes in {elapsed:.1f} s; a transfer must move more "
                f"than {self.limits.max_stall_bytes} bytes every {self.limits.stall_timeout:g} s ({STALL_HINT})"
            )
        self.start_window()

    def silent(self, exc: Exception) -> TransferStalledError:
        """The stall a read or write timeout means: no byte for a whole window."""
        wait = min(self.limits.stall_timeout, self.limits.read_timeout)
        return TransferStalledError(f"{self.what} stalled: no byte for {wait:g} s ({type(exc).__name__}; {STALL_HINT})")


class PacedStream(httpx.SyncByteStream):
    """A response body read under a :class:`Pace`; a read timeout mid-body is a stall."""

    def __init__(self, inner: Iterable[bytes], pace: Pace) -> None:
        self._inner = inner
        self._pace = pace

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except httpx.ReadTimeout as exc:
                raise self._pace.silent(exc) from None
            self._pace.moved(len(chunk))
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def paced_body(content: bytes | Iterable[bytes], pace: Pace) -> Iterator[bytes]:
    """A request body in pieces of at most :data:`PIECE_BYTES`, each accounted once sent.

    httpx asks for the next piece only after writing the previous one, so the time between
    two requests for pieces is the time the write took.
    """
    pieces = (content,) if isinstance(content, bytes) else content
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), PIECE_BYTES):
            part = bytes(view[start : start + PIECE_BYTES])
            yield part
            pace.moved(len(part))


def send_paced(
    client: httpx.Client,
    pace: Pace,
    method: str,
    url: str,
    params: Any,
    headers: dict[str, str],
    content: bytes | Iterable[bytes] | None,
    *,
    stream: bool,
) -> httpx.Response:
    """Send one request under ``pace``; every response body is read under it too (here, unless
    ``stream``). The wait for the answer's headers is ``read_timeout``'s (a registry may think,
    e.g. a pull-through cache fetching upstream); a write that waits ``stall_timeout`` (the
    body is sent in pieces under it) is a :class:`TransferStalledError`.
    """
    sized = {"Content-Length": str(len(content))} if isinstance(content, bytes) else {}
    request = client.build_request(
        method, url, params=params, headers={**sized, **headers}, content=pace_content(content, pace)
    )
    try:
        response = client.send(request, stream=True)
    except httpx.WriteTimeout as exc:
        raise pace.silent(exc) from None
    pace_response(response, pace)
    if not stream:
        try:
            response.read()
        finally:
            response.close()
    return response


def pace_response(response: httpx.Response, pace: Pace) -> None:
    """Read ``response``'s body under ``pace``: the window starts now (the wait for the headers
    is ``read_timeout``'s), and no read of the body waits longer than ``stall_timeout``.

    httpcore takes the read timeout from the request's ``timeout`` extension when the body is
    first read, so lowering it here, once the headers are in, bounds the body's reads only.
    """
    pace.start_window()
    timeouts = response.request.extensions.get("timeout")
    if isinstance(timeouts, dict) and isinstance(timeouts.get("read"), int | float):
        timeouts["read"] = min(timeouts["read"], pace.limits.stall_timeout)
    if isinstance(response.stream, httpx.SyncByteStream):
        response.stream = PacedStream(response.stream, pace)


def pace_content(content: bytes | Iterable[bytes] | None, pace: Pace) -> bytes | Iterable[bytes] | None:
    """A request body sent under ``pace`` (a small one goes as is, in one write)."""
    if content is None or (isinstance(content, bytes) and len(content) <= PIECE_BYTES):
        return content
    return paced_body(content, pace)
