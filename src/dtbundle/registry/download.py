"""Blob download: streamed, counted and hashed while it arrives, resumed with ``Range`` after a drop.

Used by :class:`~dtbundle.registry.client.RegistryClient`. A download follows redirects
(CDNs), checks that a 206 starts where it asked, starts over when a server ignores
``Range``, and gives up after ``max_resumes`` drops. A stall (too few bytes within
``stall_timeout``) is a drop too; the transfer deadline covers all resumes together.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import BinaryIO

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


def download(
    session: Session,
    target: Target,
    ref: Reference,
    desc: Descriptor,
    out: BinaryIO,
    progress: Progress | None,
    sleep: Callable[[float], None],
) -> None:
    """Stream blob ``desc`` into ``out``, verifying size and digest; resume on drops.

    ``out`` must be seekable. What was written is unverified until this returns:
    on error, the caller must discard it.
    """
    what = f"blob {desc.digest} of {ref.name}"
    path = f"/v2/{ref.repository}/blobs/{desc.digest}"
    start = out.tell()
    hasher, received, resumes = new_hasher(desc.digest), 0, 0
    pace = Pace(session.config.limits, f"download of {what}")
    while True:
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
