"""The one bounded reader of response bodies: every body dtbundle keeps in memory goes through here.

A server can announce any ``Content-Length`` and send any number of bytes; these read at
most ``limit`` bytes and fail with :class:`LimitExceededError` past it.
:func:`read_with_retries` GETs such a body and asks again when it is cut off or stalls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from dtbundle.errors import LimitExceededError, RegistryConnectionError, TransferDeadlineError
from dtbundle.oci import load_json_object
from dtbundle.registry.pace import Pace

if TYPE_CHECKING:  # the session reads error bodies through this module
    from dtbundle.registry.session import Session, Target


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
    except (httpx.HTTPError, httpx.StreamError, RegistryConnectionError):  # a stalled error body too
        pass
    return data[:limit]


def read_json_object(response: httpx.Response, limit: int, what: str) -> dict[str, Any]:
    """A JSON object body, bounded; RegistryProtocolError when it is not one."""
    return load_json_object(read_body(response, limit, what), what)


def read_with_retries(
    session: Session,
    target: Target,
    url: str,
    what: str,
    limit: int,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    sleep: Callable[[float], None],
) -> tuple[httpx.Response, bytes]:
    """GET a body kept in memory (at most ``limit`` bytes): the (closed) response and its body.

    A body cut off or stalled is asked for again, ``max_attempts`` times in all, with
    backoff, within one transfer deadline.
    """
    pace = Pace(session.config.limits, what)
    attempts = session.config.limits.max_attempts
    for attempt in range(1, attempts + 1):
        response = session.request(
            "GET", target, url, what=what, params=params, headers=headers, stream=True, pace=pace
        )
        try:
            return response, read_body(response, limit, what)
        except TransferDeadlineError:
            raise
        except RegistryConnectionError as exc:
            if attempt == attempts:
                raise type(exc)(f"{exc.message}; gave up after {attempt} attempt(s)") from None
        finally:
            response.close()
        sleep(session.backoff(attempt))
    raise AssertionError("unreachable")
