"""One HTTP session for all registries of a command: TLS, proxies, retries, auth, redirects.

It owns the httpx client (only the ``registry`` package talks to httpx) and guarantees that:

* every request has a timeout, and failures that may pass (connection errors,
  429, 500/502/503/504) are retried a bounded number of times with exponential
  backoff and full jitter, honouring ``Retry-After``; other 4xx never are;
* a 401 is answered once through :class:`~dtbundle.registry.auth.Authenticator`;
* redirects (S3/CDN blob downloads) are followed by hand, and the
  ``Authorization`` header is dropped when the redirect leaves the registry's
  origin;
* no httpx exception escapes: everything becomes a :mod:`dtbundle.errors` class.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from dtbundle.errors import (
    AuthenticationError,
    NotFoundError,
    RegistryConnectionError,
    RegistryError,
    TransferStalledError,
)
from dtbundle.registry.auth import Authenticator
from dtbundle.registry.config import RegistryConfig
from dtbundle.registry.credentials import CredentialResolver
from dtbundle.registry.errortext import (
    PLAIN_TO_TLS,
    describe_transport_error,
    registry_error_detail,
    scrub,
    speaks_no_tls,
)
from dtbundle.registry.pace import Pace, send_paced
from dtbundle.registry.proxy import ProxySettings
from dtbundle.registry.transport import build_transport, proxy_refusal, through

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# What a TLS port answers a plain HTTP request with: Go (distribution, Harbor), nginx.

Body = bytes | Callable[[], Iterable[bytes]] | None


@dataclass(frozen=True)
class Target:
    """Who a request is for: the registry host (as in references) and the repository."""

    registry: str
    host: str  # API host (Docker Hub's differs from its registry name)
    repository: str = ""
    actions: tuple[str, ...] = ("pull",)
    extra_scopes: tuple[str, ...] = ()

    @property
    def scopes(self) -> tuple[str, ...]:
        own = (f"repository:{self.repository}:{','.join(self.actions)}",) if self.repository else ()
        return own + self.extra_scopes


def is_loopback(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Session:
    """Sends registry requests with retries, auth and error translation."""

    def __init__(
        self,
        config: RegistryConfig,
        credentials: CredentialResolver,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._sleep = sleep
        # An injected transport (tests) is used as is; otherwise TLS, limits and proxies come from config.
        self._proxy_for = (config.proxy if transport is None else ProxySettings()).proxy_for
        self._client = httpx.Client(
            transport=transport if transport is not None else build_transport(config),
            # A request body goes in small pieces (pace.py): no write of one may wait a whole stall window.
            timeout=httpx.Timeout(
                config.limits.read_timeout,
                connect=config.limits.connect_timeout,
                write=min(config.limits.read_timeout, config.limits.stall_timeout),
            ),
            follow_redirects=False,
            # identity: bytes are hashed exactly as sent, and Range offsets stay meaningful.
            headers={"User-Agent": config.user_agent, "Accept-Encoding": "identity"},
            trust_env=False,  # proxies come from config.proxy, with NO_PROXY read as curl reads it
        )
        self.auth = Authenticator(credentials, self._send_plain, config.limits.max_json_bytes)
        self._schemes: dict[str, str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    # -- URLs --------------------------------------------------------------------------
    def base_url(self, host: str) -> str:
        with self._lock:
            scheme = self._schemes.get(host)
        if scheme is None:
            scheme = "http" if self.config.plain_http else "https"
        return f"{scheme}://{host}"

    def _maybe_fall_back_to_http(self, host: str, exc: Exception) -> bool:
        """Loopback registries speaking plain HTTP: switch once, as Docker does for localhost."""
        if self.config.plain_http or not self.config.loopback_plain_http_fallback:
            return False
        if not is_loopback(host) or self.base_url(host).startswith("http://"):
            return False
        # Only "the peer does not speak TLS", never a certificate failure.
        if not speaks_no_tls(exc):
            return False
        with self._lock:
            self._schemes[host] = "http"
        return True

    # -- sending -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        target: Target,
        path: str,
        *,
        what: str,
        ok: Iterable[int] = (200,),
        params: Any = None,
        headers: dict[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        follow_redirects: bool = False,
        retry: bool = True,
        pace: Pace | None = None,
    ) -> httpx.Response:
        """Send to ``target.host`` + ``path``; return the response if its status is in ``ok``.

        ``what`` names the object for error messages ("manifest reg/app:1.0").
        With ``stream`` the caller must close the response. ``retry=False`` sends once
        (for requests whose repetition is not safe, such as an upload chunk). ``pace`` bounds
        the time of a transfer that spans several requests (a download's resumes); by default
        each request is a transfer of its own.
        """
        pace = pace or Pace(self.config.limits, what)
        attempts = self.config.limits.max_attempts if retry else 1
        accepted = frozenset(ok)
        extra = dict(headers or {})
        authorization = self.auth.authorization(target.host, target.registry, target.repository, target.scopes)
        for auth_round in range(2):
            send_headers = dict(extra)
            url = path if path.startswith(("http://", "https://")) else self.base_url(target.host) + path
            # A URL the server supplied (Link, upload Location) may name another origin: the
            # registry's credentials go only to the registry's own origin.
            own = _same_origin(url, self.base_url(target.host))
            if authorization and own:
                send_headers["Authorization"] = authorization
            response = self._send_with_retries(
                method, url, target.host, what, params, send_headers, body, stream, attempts, pace
            )
            if response.status_code == 401 and not own:
                response.close()
                raise AuthenticationError(
                    f"registry {target.registry} sent {what} to another origin ({_origin(url)}), which asks for "
                    f"credentials; they are only ever sent to {_origin(self.base_url(target.host))}"
                )
            if response.status_code == 401 and auth_round == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                if not challenge:
                    raise AuthenticationError(f"registry {target.registry} refused {what} (HTTP 401, no challenge)")
                self.auth.forget(target.host)
                try:
                    authorization = self.auth.respond(
                        target.host, target.registry, target.repository, target.scopes, challenge
                    )
                except AuthenticationError as exc:  # or was it the proxy, refusing its credentials?
                    raise self._proxy_refused(response, target.host, what) or exc from None
                continue
            break
        if follow_redirects:
            hops = 0
            while response.status_code in REDIRECT_STATUSES:
                hops += 1
                location = response.headers.get("Location")
                response.close()
                if not location or hops > self.config.limits.max_redirects:
                    raise RegistryError(f"registry {target.registry}: too many or empty redirects for {what}")
                new_url = urljoin(str(response.request.url), location)
                hop_headers = dict(extra)
                # Compared with the registry itself, not the previous hop: a redirect to another
                # origin that redirects within itself must still get no credentials.
                if authorization and _same_origin(self.base_url(target.host), new_url):
                    hop_headers["Authorization"] = authorization
                response = self._send_with_retries(
                    "GET" if response.status_code == 303 else method,
                    new_url,
                    target.host,
                    what,
                    None,
                    hop_headers,
                    body,
                    stream,
                    attempts,
                    pace,
                )
        if response.status_code in accepted:
            return response
        try:
            raise self._proxy_refused(response, target.host, what) or self._status_error(response, target, what)
        finally:
            response.close()

    def _send_plain(self, request: httpx.Request) -> httpx.Response:
        """Token-service requests: retried, never authenticated by us."""
        host = request.url.netloc.decode()
        response = self._send_with_retries(
            request.method,
            str(request.url),
            host,
            "token request",
            None,
            dict(request.headers),
            request.content or None,
            False,
            self.config.limits.max_attempts,
        )
        if refused := self._proxy_refused(response, host, "token request"):
            response.close()
            raise refused
        return response

    def _proxy_refused(self, response: httpx.Response, host: str, what: str) -> RegistryConnectionError | None:
        """The error for a proxy's own 407 (or 401) to a request it was to forward; None for other answers."""
        proxy = self._proxy_for(str(response.request.url))
        if (reason := proxy_refusal(response, proxy)) is None:
            return None
        return RegistryConnectionError(f"cannot reach registry {host} for {what}{through(proxy)}: {reason}")

    def _send_with_retries(
        self,
        method: str,
        url: str,
        host: str,
        what: str,
        params: Any,
        headers: dict[str, str],
        body: Body,
        stream: bool,
        max_attempts: int,
        pace: Pace | None = None,
    ) -> httpx.Response:
        cfg = self.config
        pace = pace or Pace(cfg.limits, what)
        attempt = 0
        while True:
            attempt += 1
            pace.check_deadline()
            pace.start_window()
            content: Any = body() if callable(body) else body
            try:
                response = send_paced(self._client, pace, method, url, params, headers, content, stream=stream)
            except TransferStalledError as stall:
                if attempt >= max_attempts:
                    raise TransferStalledError(
                        f"registry {host}: {stall.message}; gave up after {attempt} attempt(s)"
                    ) from None
                self._sleep(self.backoff(attempt))
                continue
            except httpx.TransportError as exc:
                if self._maybe_fall_back_to_http(host, exc):
                    url = url.replace("https://", "http://", 1)
                    attempt -= 1
                    continue
                proxy = self._proxy_for(url)
                # A certificate the client does not trust will not be trusted next time either,
                # nor will a proxy accept credentials (or a tunnel) it refused.
                permanent = (
                    isinstance(exc, httpx.UnsupportedProtocol)
                    or "CERTIFICATE_VERIFY_FAILED" in str(exc)
                    or speaks_no_tls(exc)  # a plain-HTTP registry will not learn TLS on the next attempt
                    or (isinstance(exc, httpx.ProxyError) and str(exc).startswith("4"))
                )
                if attempt >= max_attempts or permanent:
                    raise RegistryConnectionError(
                        f"cannot reach registry {host} for {what}{through(proxy)} after {attempt} attempt(s): "
                        f"{describe_transport_error(exc, proxy)}"
                    ) from None
                self._sleep(self.backoff(attempt))
                continue
            if response.status_code == 407 and (refused := self._proxy_refused(response, host, what)):
                response.close()  # the proxy's answer to a forwarded (plain HTTP) request
                raise refused
            if response.status_code in RETRY_STATUSES and attempt < max_attempts:
                delay = self.backoff(attempt)
                if response.status_code == 429:
                    delay = max(
                        delay,
                        _retry_after(response.headers.get("Retry-After"), cfg.limits.retry_after_max),
                    )
                response.close()
                self._sleep(delay)
                continue
            return response

    def backoff(self, attempt: int) -> float:
        cap = min(self.config.limits.backoff_max, self.config.limits.backoff_initial * (2 ** (attempt - 1)))
        return random.uniform(0, cap)  # full jitter

    def _status_error(self, response: httpx.Response, target: Target, what: str) -> RegistryError:
        status = response.status_code
        creds = self.auth.credentials.lookup(target.registry, target.repository)
        known = (creds.password, creds.identity_token) if creds else ()
        detail = scrub(registry_error_detail(response, self.config.limits.max_error_body_bytes), known)
        suffix = f" ({detail})" if detail else ""
        if status == 400 and response.request.url.scheme == "http" and any(p in detail for p in PLAIN_TO_TLS):
            return RegistryError(
                f"registry {target.registry} speaks HTTPS, not plain HTTP: drop --plain-http "
                "(and pass --ca-cert FILE if its certificate is not publicly trusted)"
            )
        if status == 404:
            return NotFoundError(f"{what} not found at registry {target.registry}{suffix}")
        if status in (401, 403):
            who = creds.describe() if creds else "anonymous access (no credentials found)"
            verb = "push to" if "push" in target.actions else "read"
            return AuthenticationError(
                f"registry {target.registry} refused {who}: not allowed to {verb} "
                f"{target.repository or what} (HTTP {status}){suffix}"
            )
        # Through a proxy, a 5xx may be the proxy's own answer (it could not reach the registry).
        suffix += through(self._proxy_for(str(response.request.url)))
        if status in RETRY_STATUSES:
            return RegistryError(
                f"registry {target.registry} kept failing for {what}: HTTP {status} after "
                f"{self.config.limits.max_attempts} attempts{suffix}"
            )
        return RegistryError(f"registry {target.registry} answered HTTP {status} for {what}{suffix}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _same_origin(a: str, b: str) -> bool:
    """Scheme, host and port equal (an explicit default port is the same origin)."""

    def key(url: str) -> tuple[str, str | None, int | None]:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)

    return key(a) == key(b)


def _retry_after(value: str | None, cap: float) -> float:
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return 0.0
        seconds = parsed.timestamp() - time.time()
    return max(0.0, min(seconds, cap))
