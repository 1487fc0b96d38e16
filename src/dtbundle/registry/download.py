"""Blob download: streamed, counted and hashed while it arrives, resumed with ``Range`` after a drop.

Used by :class:`~dtbundle.registry.client.RegistryClient`. A download follows redirects
(CDNs), checks that a 206 starts where it asked, starts over when a server ignores
``Range``, and gives up after ``max_resumes`` drops. A stall (too few bytes within
``stall_timeout``) is a drop too; the transfer deadline covers all resumes together.
:func:`fetch` downloads into a file that is renamed into place once verified; a resumable
one (``export --cache-dir``) keeps its locked ``.NAME.partial`` across runs and continues it.
Bodies are read from the socket in pieces of up to ``READ_BYTES`` (httpcore reads 64 KiB by
default: sixteen times the per-piece work of h11, httpx and the hash for every MiB).
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpcore
import httpx

from dtbundle.errors import (
    DigestMismatchError,
    LocalIOError,
    RegistryConnectionError,
    RegistryProtocolError,
    TransferStalledError,
)
from dtbundle.oci import Descriptor, Reference, new_hasher
from dtbundle.oci.digest import hexdigest_of
from dtbundle.registry.pace import Pace
from dtbundle.registry.session import Session, Target

Progress = Callable[[int], None]
READ_BYTES = 1 << 20
if httpcore.HTTP11Connection.READ_NUM_BYTES < READ_BYTES:
    httpcore.HTTP11Connection.READ_NUM_BYTES = READ_BYTES  # process-wide: larger reads, same bytes


def download(
    session: Session,
    target: Target,
    ref: Reference,
    desc: Descriptor,
    out: BinaryIO,
    progress: Progress | None,
    sleep: Callable[[float], None],
    already: int = 0,
) -> None:
    """Stream blob ``desc`` into ``out``, verifying size and digest; resume on drops.

    ``out`` must be seekable and readable when ``already`` > 0: its ``already`` bytes before
    the current position are an earlier download's start of this blob, hashed again and
    continued with ``Range`` (a previous run's partial file). What was written is unverified
    until this returns: on error, the caller must discard it (or keep it to resume).
    """
    what = f"blob {desc.digest} of {ref.name}"
    path = f"/v2/{ref.repository}/blobs/{desc.digest}"
    start = out.tell() - already
    hasher, resumes = new_hasher(desc.digest), 0
    received = _rehash(out, start, already, desc.size, hasher)
    if progress and received:
        progress(received)
    pace = Pace(session.config.limits, f"download of {what}")
    while not (received and received == desc.size):
        headers = {"Range": f"bytes={received}-"} if received else {}
        response = session.request(
            "GET",
            target,
            path,
            what=what,
            ok=(200, 206),
            headers=headers,
            stream=True,
            follow_redirects=True,
            pace=pace,
        )
        try:
            if received and response.status_code == 200:
                # The server ignored Range: start again from the first byte.
                _seek_truncate(out, start)
                if progress:
                    progress(-received)
                hasher, received = new_hasher(desc.digest), 0
            elif response.status_code == 206:
                _check_content_range(response, received, what)
            # No chunk size: bytes are handed over as they arrive, so a drop loses
            # nothing already received (iter_bytes(n) would buffer up to n bytes).
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > desc.size:
                    raise DigestMismatchError(f"{what} is larger than its descriptor's {desc.size} bytes")
                hasher.update(chunk)
                _write(out, chunk)
                if progress:
                    progress(len(chunk))
            if received == desc.size:
                break
            failure = f"connection closed after {received} of {desc.size} bytes"
        except (httpx.TransportError, httpx.StreamError) as exc:
            failure = f"{type(exc).__name__} after {received} of {desc.size} bytes"
        except TransferStalledError as exc:
            failure = f"{exc.message.removeprefix(pace.what).strip()} after {received} of {desc.size} bytes"
        finally:
            response.close()
        resumes += 1
        if resumes > session.config.limits.max_resumes:
            raise RegistryConnectionError(f"download of {what} failed {resumes} times: {failure}")
        sleep(min(session.config.limits.backoff_max, session.config.limits.backoff_initial * resumes))
    actual = hexdigest_of(hasher, desc.digest)
    if not hmac.compare_digest(actual, desc.digest):
        raise DigestMismatchError(f"{what}: content has digest {actual}")


def _check_content_range(response: httpx.Response, offset: int, what: str) -> None:
    value = response.headers.get("Content-Range", "")
    if not value.startswith(f"bytes {offset}-"):
        raise RegistryProtocolError(f"{what}: asked for bytes from {offset}, got range {value!r}")


def _rehash(out: BinaryIO, start: int, already: int, size: int, hasher: Any) -> int:
    """Feed ``hasher`` the ``already`` bytes after ``start`` (a partial download being resumed);
    return how many count. More than the blob's size cannot be its start: dropped."""
    if not already:
        return 0
    if already > size:
        _seek_truncate(out, start)
        return 0
    try:
        out.seek(start)
        left = already
        while left and (chunk := out.read(min(left, 1 << 20))):
            hasher.update(chunk)
            left -= len(chunk)
        out.seek(start + already - left)
        out.truncate()
    except OSError as exc:
        raise LocalIOError(f"cannot read the partial download: {exc.strerror or exc}") from None
    return already - left


def _seek_truncate(out: BinaryIO, position: int) -> None:
    try:
        out.seek(position)
        out.truncate()
    except OSError as exc:
        raise LocalIOError(f"cannot rewind download file: {exc}") from None


def _write(out: BinaryIO, chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise LocalIOError(f"cannot write downloaded data: {exc.strerror or exc}") from None


def fetch(
    session: Session,
    target: Target,
    ref: Reference,
    desc: Descriptor,
    dest: Path,
    progress: Progress | None,
    sleep: Callable[[float], None],
    resumable: bool,
) -> None:
    """Download blob ``desc`` into a temp file beside ``dest``; rename it into place once verified.

    ``resumable``: the temp file is ``.NAME.partial``, kept when the download fails (or the
    process dies) and continued with ``Range`` next time; a lock on it keeps two processes from
    writing it at once (the second then downloads into a private temp file).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp, keep = open_partial(dest) if resumable else (-1, dest, False)
        if fd < 0:
            fd, tmp_name = tempfile.mkstemp(prefix=".dl-", dir=dest.parent)
            tmp = Path(tmp_name)
    except OSError as exc:
        raise LocalIOError(f"cannot write {dest}: {exc.strerror or exc}") from None
    counted = 0

    def arrived(n: int) -> None:
        nonlocal counted
        counted += n
        if progress:
            progress(n)

    verified = False
    try:
        with os.fdopen(fd, "r+b") as handle:
            already = handle.seek(0, os.SEEK_END)
            try:
                download(session, target, ref, desc, handle, arrived, sleep, already)
            except DigestMismatchError:
                if not already:
                    raise
                # The partial file was not the blob's start (damaged on disk): once more, from zero.
                arrived(-counted)
                _seek_truncate(handle, 0)
                download(session, target, ref, desc, handle, arrived, sleep)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, dest)
            verified = True
    except OSError as exc:
        raise LocalIOError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except DigestMismatchError:
        keep = False  # the content is wrong: nothing of it is worth resuming
        raise
    finally:
        if not verified and not keep:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def open_partial(dest: Path) -> tuple[int, Path, bool]:
    """``(fd, path, True)`` of ``.NAME.partial`` beside ``dest``, locked for this process, to write or
    continue; ``(-1, path, False)`` when another process holds it (or it cannot be opened)."""
    path = dest.with_name(f".{dest.name}.partial")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return -1, path, False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1, path, False
    return fd, path, True
