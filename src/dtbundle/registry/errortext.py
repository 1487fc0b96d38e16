"""What a registry's error answer says, made safe to show: its message, read with a bound,
and scrubbed of anything that looks like a credential; and what a transport failure was.

Some servers and proxies echo the request (headers included) in their error pages; a
message dtbundle prints must never carry the ``Authorization`` it sent or a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import httpx

from dtbundle import jsontext
from dtbundle.registry.bounded import read_prefix
from dtbundle.registry.proxy import Proxy
from dtbundle.registry.transport import proxy_transport_failure

PLAIN_TO_TLS = ("Client sent an HTTP request to an HTTPS server", "The plain HTTP request was sent to HTTPS port")
# "Bearer eyJ…", "Basic YWxp…", "Authorization: …", "password=…", "token: …" and the like.
_CREDENTIAL = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(authorization|proxy-authorization)\s*[:=]\s*\S+(\s+\S+)?"
    r"|\b(password|passwd|secret|token|access_token|refresh_token)\s*[:=]\s*\S+"
)


def scrub(text: str, known: Iterable[str | None] = ()) -> str:
    """``text`` with credential-like runs and the ``known`` secrets replaced by ``***``."""
    for secret in known:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _CREDENTIAL.sub(lambda m: (m.group(1) + " ***") if m.group(1) else "***", text)


def registry_error_detail(response: httpx.Response, limit: int) -> str:
    """The distribution spec's error body as 'CODE: message' (or the first line of a
    short text/plain body, such as "Client sent an HTTP request to an HTTPS server."),
    read with a bound."""
    data = read_prefix(response, limit)
    try:
        obj = jsontext.loads(data)
    except ValueError:
        # Go answers plain HTTP on a TLS port with a bare text line and no Content-Type.
        if response.headers.get("Content-Type", "text/plain").startswith("text/plain"):
            line = data[:200].decode("utf-8", "replace").strip().splitlines()[:1]
            return _printable("".join(line))[:120]
        if PLAIN_TO_TLS[1].encode() in data[:2000]:  # nginx says so in an HTML page
            return PLAIN_TO_TLS[1]
        return ""
    errors = obj.get("errors") if isinstance(obj, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code, message = errors[0].get("code", ""), errors[0].get("message", "")
        return _printable(f"{code}: {message}".strip(": "))[:200]
    return ""


def _printable(text: str) -> str:
    """A server's words without control characters: they could drive the terminal (escape
    sequences) or forge a second line of output."""
    return "".join(ch for ch in text if ch.isprintable())


def speaks_no_tls(exc: Exception) -> bool:
    """The peer answered a TLS handshake in plain HTTP."""
    text = str(exc)
    return "WRONG_VERSION_NUMBER" in text or "record layer failure" in text


def describe_transport_error(exc: httpx.TransportError, proxy: Proxy | None = None) -> str:
    """A transport failure in words, with what to do where there is something to do."""
    text = str(exc) or type(exc).__name__
    if proxy is not None and (about_proxy := proxy_transport_failure(exc, proxy)):
        return about_proxy
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "TLS certificate not trusted; pass --ca-cert FILE with the registry's CA "
            "(or --insecure-skip-tls-verify to opt out)"
        )
    if speaks_no_tls(exc):
        return "the registry does not speak TLS (it answers plain HTTP); pass --plain-http to talk plain HTTP to it"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text}"[:300]
