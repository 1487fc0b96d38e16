"""The one bounded reader of response bodies: every body dtbundle keeps in memory goes through here.

A server can announce any ``Content-Length`` and send any number of bytes; these read at
most ``limit`` bytes and fail with :class:`LimitExceededError` past it.
"""

from __future__ import annotations

from typing import Any

import httpx

from dtbundle.errors import LimitExceededError, RegistryConnectionError
from dtbundle.oci import load_json_object


def read_body(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole body of a streamed response, refusing more than ``limit`` bytes."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise LimitExceededError(f"{what} is {length} bytes, above the limit of {limit}")
    data = bytearray()
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise LimitExceededError(f"{what} is larger than the limit of {limit} bytes")
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise RegistryConnectionError(f"connection lost while reading {what}: {type(exc).__name__}") from None
    return bytes(data)


def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most the first ``limit`` bytes of a body (error messages); never raises."""
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass
    return data[:limit]


def read_json_object(response: httpx.Response, limit: int, what: str) -> dict[str, Any]:
    """A JSON object body, bounded; RegistryProtocolError when it is not one."""
    return load_json_object(read_body(response, limit, what), what)
