"""JSON from an HTTP API next to the registries (the Dynatrace Deployment API), spoken
through the registry session so that it gets the same guarantees as registry traffic:
the TLS and proxy settings of :class:`RegistryConfig` (``--ca-cert``, ``--proxy``), timeouts, bounded retries
with backoff (connection errors, 429, 5xx), and a body read with the ``max_json_bytes``
bound. Unlike registry requests, these never carry registry credentials (the caller sends
its own ``Authorization`` header) and never fall back from HTTPS to plain HTTP. No httpx
type or exception leaves this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from dtbundle.errors import RegistryConnectionError
from dtbundle.registry.bounded import read_json_object
from dtbundle.registry.config import RegistryConfig
from dtbundle.registry.credentials import CredentialResolver
from dtbundle.registry.session import Session


@dataclass(frozen=True)
class JsonAnswer:
    """The final HTTP status (after retries) and, for a 200, the JSON object it carried."""

    status: int
    body: dict[str, Any] | None = None


class ServiceSession(Session):
    """A :class:`Session` for a JSON API that is not a registry: no registry credentials, no HTTP fallback."""

    def __init__(
        self,
        config: RegistryConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The URL's scheme is the caller's: never switch an https:// URL to plain HTTP.
        config = replace(config or RegistryConfig(), loopback_plain_http_fallback=False)
        super().__init__(config, CredentialResolver(use_config_files=False), transport=transport, sleep=sleep)

    def __enter__(self) -> ServiceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_json(self, url: str, headers: Mapping[str, str], what: str) -> JsonAnswer:
        """GET ``url`` with ``headers``; a 200's body must be a JSON object of at most ``max_json_bytes``.

        Raises RegistryConnectionError when the host stays unreachable, LimitExceededError for
        an oversized body, RegistryProtocolError for a body that is not a JSON object. Any other
        status is returned (with no body) for the caller to explain. ``what`` names the answer
        in messages; it must not contain secrets (nor do the messages contain ``headers``).
        """
        limits = self.config.limits
        host = urlsplit(url).netloc
        try:
            response = self._send_with_retries(
                "GET", url, host, what, None, dict(headers), None, True, limits.max_attempts
            )
        except RegistryConnectionError as exc:  # the session's wording is about registries; this host is not one
            raise RegistryConnectionError(exc.message.replace(f"registry {host} ", f"{host} ", 1)) from None
        try:
            if (refused := self._proxy_refused(response, host, what)) is not None:  # not the service's 401
                raise RegistryConnectionError(refused.message.replace(f"registry {host} ", f"{host} ", 1))
            if response.status_code != 200:
                return JsonAnswer(response.status_code)
            return JsonAnswer(200, read_json_object(response, limits.max_json_bytes, what))
        finally:
            response.close()
