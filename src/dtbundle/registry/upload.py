"""Blob upload: cross-repository mount, monolithic POST+PUT, chunked PATCH with resume.

Called by :meth:`RegistryClient.upload_blob` once it knows the blob is absent.
A chunk whose PATCH fails is not blindly re-sent: we ask the registry how much
of the upload it holds (``GET`` on the upload URL, ``Range: 0-N``) and go on
from there, as the distribution spec describes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO, Literal
from urllib.parse import urljoin

import httpx

from dtbundle.errors import (
    DigestMismatchError,
    LocalIOError,
    RegistryConnectionError,
    RegistryError,
    RegistryProtocolError,
)
from dtbundle.oci import Descriptor
from dtbundle.registry.session import Session, Target

_READ_BYTES = 1024 * 1024
_MAX_CHUNK_FAILURES = 5


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


def upload(
    session: Session,
    target: Target,
    desc: Descriptor,
    open_content: Callable[[], BinaryIO],
    try_mount: bool,
    mount_from: str | None,
    progress: Callable[[int], None] | None,
) -> Literal["mounted", "uploaded"]:
    base = f"/v2/{target.repository}/blobs/uploads/"
    what = f"upload of blob {desc.digest} to {target.registry}/{target.repository}"
    params = {"mount": desc.digest, "from": mount_from} if try_mount and mount_from else None
    response = session.request("POST", target, base, what=what, ok=(201, 202), params=params)
    response.close()
    if response.status_code == 201 and params:
        return "mounted"
    location = _location(response, what)
    min_chunk = int(response.headers.get("OCI-Chunk-Min-Length", "0") or 0)
    cfg = session.config
    if desc.size <= cfg.monolithic_upload_max:
        final = _with_digest(location, desc.digest)
        response = session.request(
            "PUT",
            target,
            final,
            what=what,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
            body=_read_range(open_content, 0, desc.size, progress),
        )
    else:
        location = _upload_chunks(
            session,
            target,
            desc,
            open_content,
            location,
            max(cfg.upload_chunk_bytes, min_chunk),
            what,
            progress,
        )
        response = session.request(
            "PUT",
            target,
            _with_digest(location, desc.digest),
            what=what,
            ok=(201,),
            headers={"Content-Length": "0"},
            body=b"",
        )
    response.close()
    stored = response.headers.get("Docker-Content-Digest")
    if stored and stored != desc.digest:
        raise DigestMismatchError(f"{what}: registry stored the blob as {stored}")
    return "uploaded"


def _upload_chunks(
    session: Session,
    target: Target,
    desc: Descriptor,
    open_content: Callable[[], BinaryIO],
    location: str,
    chunk_size: int,
    what: str,
    progress: Callable[[int], None] | None,
) -> str:
    offset, failures = 0, 0
    while offset < desc.size:
        length = min(chunk_size, desc.size - offset)
        try:
            response = session.request(
                "PATCH",
                target,
                location,
                what=what,
                ok=(202,),
                retry=False,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + length - 1}",
                    "Content-Length": str(length),
                },
                body=_read_range(open_content, offset, length, None),
            )
        except (RegistryConnectionError, RegistryError) as exc:
            failures += 1
            if failures > _MAX_CHUNK_FAILURES or isinstance(exc, DigestMismatchError):
                raise
            # Ask the registry what it holds and continue from there.
            status = session.request("GET", target, location, what=what, ok=(204,))
            status.close()
            location = _location(status, what)
            held = _range_end(status.headers.get("Range", ""))
            if (held < offset and held != 0) or held > desc.size:
                raise RegistryProtocolError(f"{what}: registry reports an impossible upload offset {held}") from None
            if progress and held > offset:
                progress(held - offset)
            offset = held
            continue
        response.close()
        location = _location(response, what)
        held = _range_end(response.headers.get("Range", ""))
        if held != offset + length:
            raise RegistryProtocolError(
                f"{what}: registry holds {held} bytes after a chunk ending at {offset + length}"
            )
        if progress:
            progress(length)
        offset = held
    return location


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
