"""Blob upload: cross-repository mount, monolithic POST+PUT, chunked PATCH with resume.

Used by :class:`RegistryClient` once it knows the blob is absent. Content comes
from a file (re-readable) or from a one-pass stream (a bundle being verified);
either way a chunk is buffered in memory before its PATCH, so a failed chunk is
not blindly re-sent: we ask the registry how much of the upload it holds
(``GET`` on the upload URL, ``Range: 0-N``) and send only the rest, as the
distribution spec describes. Memory stays at one chunk per upload. A stalled chunk
is a failed chunk; one transfer deadline covers all chunks of an upload.

:func:`put_stream` sends a whole blob in one streamed request instead (import: content
that can be read again from any offset): ``PUT ?digest=`` with the body for blobs up to
``monolithic_upload_max``, else one ``PATCH`` with the body and an empty ``PUT``; after a
failure, the rest from the registry's ``Range``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO
from urllib.parse import urljoin

import httpx

from dtbundle.errors import (
    AuthenticationError,
    DigestMismatchError,
    IntegrityError,
    LocalIOError,
    NotFoundError,
    RegistryConnectionError,
    RegistryError,
    RegistryProtocolError,
    TransferDeadlineError,
)
from dtbundle.oci import Descriptor
from dtbundle.registry.pace import Pace
from dtbundle.registry.session import Session, Target

_READ_BYTES = 1024 * 1024


def _read_range(
    open_content: Callable[[], BinaryIO],
    start: int,
    length: int,
    progress: Callable[[int], None] | None,
) -> Callable[[], Iterator[bytes]]:
    """A body factory streaming ``length`` bytes from ``start`` of a freshly opened file."""

    def body() -> Iterator[bytes]:
        try:
            with open_content() as handle:
                handle.seek(start)
                left = length
                while left > 0:
                    chunk = handle.read(min(_READ_BYTES, left))
                    if not chunk:
                        raise LocalIOError(f"content ended {left} bytes early while uploading")
                    left -= len(chunk)
                    if progress:
                        progress(len(chunk))
                    yield chunk
        except OSError as exc:
            raise LocalIOError(f"cannot read content to upload: {exc.strerror or exc}") from None

    return body


def begin(session: Session, target: Target, desc: Descriptor, mount_from: str | None) -> tuple[str | None, int]:
    """Open an upload session: (location, OCI-Chunk-Min-Length), or (None, 0) when mounted."""
    base = f"/v2/{target.repository}/blobs/uploads/"
    what = _what(target, desc)
    params = {"mount": desc.digest, "from": mount_from} if mount_from else None
    response = session.request("POST", target, base, what=what, ok=(201, 202), params=params)
    response.close()
    if response.status_code == 201 and params:
        return None, 0
    return _location(response, what), int(response.headers.get("OCI-Chunk-Min-Length", "0") or 0)


def put_whole(
    session: Session,
    target: Target,
    desc: Descriptor,
    location: str,
    body: bytes | Callable[[], Iterator[bytes]],
    progress: Callable[[int], None] | None,
) -> None:
    """Monolithic upload: one PUT carrying the whole blob (replayable body, so retried)."""
    data = body if isinstance(body, bytes) else None
    response = session.request(
        "PUT",
        target,
        _with_digest(location, desc.digest),
        what=_what(target, desc),
        ok=(201,),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
        body=(lambda: _once(data)()) if data is not None else body,
    )
    response.close()
    if data is not None and progress:
        progress(len(data))
    _check_stored(response, target, desc)


def put_chunks(
    session: Session,
    target: Target,
    desc: Descriptor,
    location: str,
    pieces: Iterator[bytes],
    chunk_size: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Chunked upload from a one-pass iterator: each chunk is buffered (at most
    ``chunk_size`` bytes) so that a failed PATCH can be resumed from memory."""
    offset = 0
    pace = Pace(session.config.limits, _what(target, desc))
    for piece in _rechunk(pieces, chunk_size):
        location = _patch(session, target, desc, location, piece, offset, pace)
        offset += len(piece)
        if progress:
            progress(len(piece))
    if offset != desc.size:
        raise IntegrityError(f"{_what(target, desc)}: content is {offset} bytes, expected {desc.size}")
    response = _commit(session, target, desc, location, pace)
    response.close()
    _check_stored(response, target, desc)


def _commit(session: Session, target: Target, desc: Descriptor, location: str, pace: Pace) -> httpx.Response:
    """The empty ``PUT ?digest=`` that ends an upload whose content the registry holds."""
    return session.request(
        "PUT",
        target,
        _with_digest(location, desc.digest),
        what=_what(target, desc),
        ok=(201,),
        headers={"Content-Length": "0"},
        body=b"",
        pace=pace,
    )


def put_stream(
    session: Session,
    target: Target,
    desc: Descriptor,
    location: str,
    read_from: Callable[[int], Iterator[bytes]],
    monolithic: bool,
) -> None:
    """The whole blob in one streamed request: ``PUT ?digest=`` with the body (``monolithic``),
    else one ``PATCH`` with the body and an empty ``PUT``. ``read_from(offset)`` streams the
    content from ``offset`` (``desc.size`` bytes in all, given as ``Content-Length``).

    After a failure the registry is asked what it holds (``GET`` on the upload URL) and the
    rest follows in one ``PATCH``, at most ``max_chunk_failures`` times; one pace (stall window,
    deadline) covers it all. Never resumed: a digest mismatch, the deadline, a refusal (401,
    403) or a session the registry does not know (404).
    """
    what = _what(target, desc)
    pace = Pace(session.config.limits, what)
    held, failures = 0, 0
    while True:
        try:
            if held == 0 and monolithic:
                response = session.request(
                    "PUT",
                    target,
                    _with_digest(location, desc.digest),
                    what=what,
                    ok=(201,),
                    retry=False,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
                    body=lambda: read_from(0),
                    pace=pace,
                )
            else:
                if held < desc.size:
                    location = _patch_rest(session, target, desc, location, read_from, held, pace)
                    held = desc.size
                response = _commit(session, target, desc, location, pace)
            response.close()
            _check_stored(response, target, desc)
            return
        except (RegistryConnectionError, RegistryError) as exc:
            failures += 1
            final = DigestMismatchError | TransferDeadlineError | AuthenticationError | NotFoundError
            if failures > session.config.limits.max_chunk_failures or isinstance(exc, final):
                raise
            location, held = _held(session, target, location, what, pace)
            if held > desc.size:
                raise RegistryProtocolError(
                    f"{what}: the registry holds {held} bytes of a {desc.size}-byte blob"
                ) from None


def _patch_rest(
    session: Session,
    target: Target,
    desc: Descriptor,
    location: str,
    read_from: Callable[[int], Iterator[bytes]],
    start: int,
    pace: Pace,
) -> str:
    """One PATCH with the content from ``start`` to the end; the next upload URL."""
    what = _what(target, desc)
    location, held = _patch_range(session, target, location, what, start, desc.size, lambda: read_from(start), pace)
    if held != desc.size:
        raise RegistryProtocolError(f"{what}: registry holds {held} bytes after the upload of all {desc.size}")
    return location


def _patch_range(
    session: Session,
    target: Target,
    location: str,
    what: str,
    start: int,
    end: int,
    body: Callable[[], Iterator[bytes]],
    pace: Pace,
) -> tuple[str, int]:
    """PATCH bytes ``start`` to ``end`` (exclusive), not retried (the caller resumes from what the
    registry holds); the next upload URL and how many bytes the registry says it holds."""
    response = session.request(
        "PATCH",
        target,
        location,
        what=what,
        ok=(202,),
        retry=False,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{end - 1}",
            "Content-Length": str(end - start),
        },
        body=body,
        pace=pace,
    )
    response.close()
    return _location(response, what), _range_end(response.headers.get("Range", ""))


def _held(session: Session, target: Target, location: str, what: str, pace: Pace) -> tuple[str, int]:
    """Ask the registry how much of an upload it holds: (the upload URL to go on with, bytes held)."""
    status = session.request("GET", target, location, what=what, ok=(204,), pace=pace)
    status.close()
    return _location(status, what), _range_end(status.headers.get("Range", ""))


def file_pieces(open_content: Callable[[], BinaryIO], size: int) -> Iterator[bytes]:
    """A file's content, once through."""
    return _read_range(open_content, 0, size, None)()


def replayable(
    open_content: Callable[[], BinaryIO], size: int, progress: Callable[[int], None] | None
) -> Callable[[], Iterator[bytes]]:
    """A body factory that re-opens the file on every (re)try."""
    return _read_range(open_content, 0, size, progress)


def _rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Pieces of any size regrouped into chunks of ``size`` bytes (the last may be shorter),
    with one copy per chunk."""
    held: list[bytes] = []
    length = 0
    for piece in pieces:
        while piece:
            take = piece[: size - length]
            piece = piece[len(take) :]
            held.append(take)
            length += len(take)
            if length == size:
                yield b"".join(held)
                held, length = [], 0
    if held:
        yield b"".join(held)


def _patch(
    session: Session, target: Target, desc: Descriptor, location: str, piece: bytes, offset: int, pace: Pace
) -> str:
    """Send ``piece`` (at ``offset``); after a failure, resend only what the registry lacks."""
    what = _what(target, desc)
    sent, failures = 0, 0
    while sent < len(piece):
        start = offset + sent
        try:
            location, held = _patch_range(
                session, target, location, what, start, offset + len(piece), _once(piece[sent:]), pace
            )
        except (RegistryConnectionError, RegistryError) as exc:
            failures += 1
            if failures > session.config.limits.max_chunk_failures or isinstance(
                exc, DigestMismatchError | TransferDeadlineError
            ):
                raise
            # Ask the registry what it holds and go on from there.
            location, held = _held(session, target, location, what, pace)
            if not offset <= held <= offset + len(piece):
                raise RegistryProtocolError(
                    f"{what}: cannot resume, the registry holds {held} bytes and the buffered chunk "
                    f"covers {offset}..{offset + len(piece)}"
                ) from None
            sent = held - offset
            continue
        if held != offset + len(piece):
            raise RegistryProtocolError(
                f"{what}: registry holds {held} bytes after a chunk ending at {offset + len(piece)}"
            )
        sent = len(piece)
    return location


def _once(data: bytes) -> Callable[[], Iterator[bytes]]:
    """A body httpx releases as soon as it is sent.

    httpx's request and response objects form a reference cycle that only the cyclic
    garbage collector frees; a request holding a multi-megabyte ``bytes`` body would
    keep it alive until then, and RSS would grow with the bundle. An exhausted list
    iterator drops its list, and so the data, at once.
    """
    return lambda: iter([data])


def _what(target: Target, desc: Descriptor) -> str:
    return f"upload of blob {desc.digest} to {target.registry}/{target.repository}"


def _check_stored(response: httpx.Response, target: Target, desc: Descriptor) -> None:
    stored = response.headers.get("Docker-Content-Digest")
    if stored and stored != desc.digest:
        raise DigestMismatchError(f"{_what(target, desc)}: registry stored the blob as {stored}")


def _location(response: httpx.Response, what: str) -> str:
    location = response.headers.get("Location")
    if not location:
        raise RegistryProtocolError(f"{what}: the registry sent no upload Location")
    return str(urljoin(str(response.request.url), location))


def _with_digest(location: str, digest: str) -> str:
    return str(httpx.URL(location).copy_merge_params({"digest": digest}))


def _range_end(header: str) -> int:
    """``Range: 0-1023`` -> 1024 bytes held.

    distribution answers ``0-0`` for an empty upload as well as for one byte; chunks
    are megabytes long, so reading it as "nothing held" is the safe side.
    """
    if not header or header.replace("bytes=", "") == "0-0":
        return 0
    _, _, end = header.replace("bytes=", "").partition("-")
    if not end.isdigit():
        raise RegistryProtocolError(f"malformed upload Range header {header!r}")
    return int(end) + 1
