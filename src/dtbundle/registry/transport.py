"""The httpx transport under a :class:`~dtbundle.registry.session.Session`: TLS verification,
connection limits, and routing through proxies.

One direct transport and one per proxy of :class:`~dtbundle.registry.proxy.ProxySettings`, all
with the same TLS context (``--ca-cert``, ``--insecure-skip-tls-verify``) and limits; each request
goes to the one :meth:`ProxySettings.proxy_for` picks from its URL. Through a proxy, ``http://``
URLs are forwarded (absolute-URI requests) and ``https://`` URLs tunnelled with ``CONNECT``, so
the registry's certificate is verified end to end exactly as without a proxy. Proxy credentials
go in ``Proxy-Authorization`` to the proxy only. An ``https://`` proxy's own certificate is
verified with the same TLS context.
"""

from __future__ import annotations

import ssl

import httpx

from dtbundle.errors import LocalIOError
from dtbundle.registry.config import RegistryConfig
from dtbundle.registry.proxy import Proxy, ProxySettings


def tls_context(config: RegistryConfig) -> ssl.SSLContext:
    """The TLS context for registries (and proxies): verified by default, ``ca_cert`` when given."""
    verify: ssl.SSLContext | bool = True
    if config.insecure_skip_tls_verify:
        verify = False
    elif config.ca_cert is not None:
        try:
            verify = ssl.create_default_context(cafile=str(config.ca_cert))
        except (OSError, ssl.SSLError) as exc:
            raise LocalIOError(f"cannot load CA certificate {config.ca_cert}: {exc}") from None
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def build_transport(config: RegistryConfig) -> httpx.BaseTransport:
    """A transport for ``config``: direct, or routing between direct and its proxies."""
    context = tls_context(config)
    limits = httpx.Limits(
        max_connections=config.limits.max_connections,
        max_keepalive_connections=config.limits.max_connections,
    )

    def make(proxy: Proxy | None) -> httpx.HTTPTransport:
        routed = None
        if proxy is not None:  # an https:// proxy's own certificate is verified like a registry's
            proxy_tls = context if proxy.scheme == "https" else None
            routed = httpx.Proxy(proxy.url, auth=proxy.auth, ssl_context=proxy_tls)
        return httpx.HTTPTransport(verify=context, limits=limits, trust_env=False, proxy=routed)

    if not config.proxy.proxies:
        return make(None)
    return ProxyRoutingTransport(config.proxy, make(None), {p: make(p) for p in config.proxy.proxies})


class ProxyRoutingTransport(httpx.BaseTransport):
    """Sends each request through the transport of the proxy its URL calls for (or directly)."""

    def __init__(
        self, settings: ProxySettings, direct: httpx.BaseTransport, proxied: dict[Proxy, httpx.BaseTransport]
    ) -> None:
        self._settings = settings
        self._direct = direct
        self._proxied = proxied

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self._settings.proxy_for(str(request.url))
        transport = self._direct if proxy is None else self._proxied[proxy]
        return transport.handle_request(request)

    def close(self) -> None:
        for transport in (self._direct, *self._proxied.values()):
            transport.close()


# -- what to say when a proxy is in the way ----------------------------------------------------------
def through(proxy: Proxy | None) -> str:
    """`` through proxy http://***@host:port (from HTTPS_PROXY)`` for messages, or nothing."""
    return f" through {proxy.describe()}" if proxy is not None else ""


def proxy_auth_failure(proxy: Proxy, status: str) -> str:
    if proxy.has_credentials:
        return f"the proxy refused its credentials ({status}); check the user and password in the proxy URL"
    return f"the proxy requires authentication ({status}); give them as http://USER:PASSWORD@HOST:PORT"


def proxy_transport_failure(exc: httpx.TransportError, proxy: Proxy) -> str | None:
    """What failed, when ``exc`` (of a request sent through ``proxy``) is about the proxy itself."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ProxyError):  # the proxy's answer to CONNECT, e.g. "407 Proxy Authentication Required"
        if text.startswith(("401", "407")):  # tinyproxy answers a CONNECT with wrong credentials 401
            return proxy_auth_failure(proxy, text[:100])
        return f"the proxy refused the tunnel ({text[:100]})"
    tls = any(word in text for word in ("SSL", "TLS", "CERTIFICATE", "record layer", "handshake"))
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and not tls:
        return f"the proxy cannot be reached ({type(exc).__name__}: {text})"[:300]
    return None


def proxy_refusal(response: httpx.Response, proxy: Proxy | None) -> str | None:
    """Why ``proxy`` refused a request it was to forward, when ``response`` is that refusal: a 407,
    or a 401 to a plain-HTTP request that the proxy wrote itself (tinyproxy answers wrong
    credentials so). A 401 that passed a proxy carries ``Via``; registries also send
    ``Docker-Distribution-API-Version``. Through a CONNECT tunnel the proxy cannot answer at all."""
    if proxy is None or response.status_code not in (401, 407):
        return None
    if response.status_code == 401 and (
        not proxy.has_credentials
        or response.request.url.scheme != "http"
        or "via" in response.headers
        or "docker-distribution-api-version" in response.headers
    ):
        return None
    return proxy_auth_failure(proxy, f"HTTP {response.status_code}")
