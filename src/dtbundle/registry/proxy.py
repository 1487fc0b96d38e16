"""Which proxy a request goes through: ``--proxy``, ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``
and ``NO_PROXY``, as curl reads them. Pure: the caller passes the environment in.

* ``https://`` URLs use ``https_proxy``/``HTTPS_PROXY``, ``http://`` URLs ``http_proxy``/``HTTP_PROXY``,
  both fall back to ``all_proxy``/``ALL_PROXY``; the lower-case spelling wins when both are set
  (curl's order), an empty value counts as unset. An explicit ``--proxy`` replaces all of them
  (``--proxy ""``: connect directly whatever the environment says).
* Proxy URLs are ``http://`` or ``https://`` (a bare ``host:port`` means ``http://``), with an
  optional ``user:password@``; the port defaults to the scheme's (80, 443). Anything else is a
  :class:`UsageError` naming where the value came from, never showing its password.
* ``NO_PROXY`` (comma- or space-separated, case-insensitive): ``*`` bypasses the proxy for every
  host; ``example.com``, ``.example.com`` and ``*.example.com`` all match ``example.com`` and its
  subdomains; ``192.0.2.7``, ``::1``/``[::1]`` match that address literal; ``10.0.0.0/8`` and
  ``fd00::/8`` match literals in the range; any entry with ``:PORT`` (``[v6]:PORT``) matches that
  port only. Names are never resolved: ``localhost`` does not match ``127.0.0.1``. Loopback hosts
  are proxied like any other unless NO_PROXY names them (curl's rule; Go tools never proxy them).
  Entries that do not parse are ignored, as curl and Go do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from dtbundle.errors import UsageError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}

# (variable names in order of precedence) per slot; the fallback comes after the own ones.
_HTTPS_VARS = ("https_proxy", "HTTPS_PROXY")
_HTTP_VARS = ("http_proxy", "HTTP_PROXY")
_ALL_VARS = ("all_proxy", "ALL_PROXY")
_NO_PROXY_VARS = ("no_proxy", "NO_PROXY")


@dataclass(frozen=True)
class Proxy:
    """One proxy: its URL (credentials included, for the transport only) and where it came from."""

    scheme: str
    host: str  # lower case; IPv6 without brackets
    port: int
    source: str  # "--proxy", "HTTPS_PROXY", ...
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def parse(cls, value: str, source: str) -> Proxy:
        text = value.strip()
        if "://" not in text:
            text = "http://" + text  # curl and Go read a bare host:port as an HTTP proxy
        parts = urlsplit(text)
        shown = _redact(text)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise UsageError(
                f"{source}: proxy {shown} uses {scheme}://; only http:// and https:// proxies are supported"
            )
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise UsageError(f"{source}: proxy {shown} has an invalid port") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise UsageError(f"{source}: {shown} is not a proxy URL; expected http://[user:password@]host:port")
        return cls(
            scheme,
            parts.hostname.lower(),
            port,
            source,
            unquote(parts.username or ""),
            unquote(parts.password or ""),
        )

    @property
    def has_credentials(self) -> bool:
        return bool(self.username or self.password)

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL without credentials (they go in ``Proxy-Authorization``: see :attr:`auth`)."""
        return f"{self.scheme}://{self._netloc()}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.has_credentials else None

    @property
    def redacted(self) -> str:
        """The URL as messages show it: ``http://***@host:port`` when it carries credentials."""
        return f"{self.scheme}://{'***@' if self.has_credentials else ''}{self._netloc()}"

    def describe(self) -> str:
        return f"proxy {self.redacted} (from {self.source})"


@dataclass(frozen=True)
class NoProxyEntry:
    """One NO_PROXY entry: a domain, an address or a range, optionally bound to one port."""

    domain: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> NoProxyEntry | None:
        """The entry, or None when it does not parse (ignored, as curl and Go ignore it)."""
        entry = text.strip().lower()
        port: str | None = None
        if entry.startswith("["):  # [v6], [v6]:port, [v6/len], [v6]/len, [v6]/len:port
            inside, bracket, rest = entry[1:].partition("]")
            if not bracket:
                return None
            prefix, colon, port = rest.partition(":")
            if (prefix and not prefix.startswith("/")) or (colon and not port):
                return None
            entry, port = inside + prefix, (port if colon else None)
        elif entry.count(":") == 1:  # host:port, a.b.c.d:port, a.b.c.d/len:port
            entry, port = entry.split(":")
        number = None
        if port is not None:
            if not port.isdigit() or not 0 < int(port) < 65536:
                return None
            number = int(port)
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            pass
        else:
            return cls(network=network, port=number)
        domain = entry.removeprefix("*.").removeprefix(".").rstrip(".")
        if not domain or any(c in domain for c in "*/@[]") or ":" in domain:
            return None
        return cls(domain=domain, port=number)

    def matches(self, host: str, port: int) -> bool:
        """``host`` lower case, IPv6 without brackets; ``port`` the URL's effective port."""
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            address = _address(host)
            return address is not None and address.version == self.network.version and address in self.network
        assert self.domain is not None
        return host == self.domain or host.endswith("." + self.domain)


@dataclass(frozen=True)
class ProxySettings:
    """The proxies of one command; the default has none (every request goes direct)."""

    https: Proxy | None = None
    http: Proxy | None = None
    no_proxy: tuple[NoProxyEntry, ...] = ()
    bypass_all: bool = False  # NO_PROXY=*

    @classmethod
    def from_environment(cls, env: Mapping[str, str], explicit: str | None = None) -> ProxySettings:
        """Settings from ``env`` (pass ``os.environ``) and ``--proxy`` (``explicit``), which overrides
        every proxy variable (``--proxy ""``: no proxy at all); NO_PROXY applies to both. Only
        proxies that can be chosen are parsed, so a shadowed ``ALL_PROXY=socks5://…`` is no error."""
        _, no_proxy_value = _first(env, _NO_PROXY_VARS)
        entries = no_proxy_value.replace(",", " ").split()
        parsed = tuple(p for p in (NoProxyEntry.parse(e) for e in entries if e != "*") if p is not None)
        https: Proxy | None
        http: Proxy | None
        if explicit is not None:
            https = http = Proxy.parse(explicit, "--proxy") if explicit.strip() else None
        else:
            https, http = (_from_env(env, own) for own in (_HTTPS_VARS, _HTTP_VARS))
        return cls(https, http, parsed, "*" in entries)

    @property
    def proxies(self) -> tuple[Proxy, ...]:
        """Every distinct proxy a request may be routed through."""
        found = [p for p in (self.https, self.http) if p is not None]
        return tuple(dict.fromkeys(found))

    def bypasses(self, host: str, port: int) -> bool:
        """Whether NO_PROXY names ``host`` (on ``port``)."""
        host = host.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return self.bypass_all or any(entry.matches(host, port) for entry in self.no_proxy)

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy a request for ``url`` goes through, or None for a direct connection."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = {"https": self.https, "http": self.http}.get(scheme)
        if proxy is None or not parts.hostname:
            return None
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            return proxy
        return None if self.bypasses(parts.hostname, port) else proxy


def _from_env(env: Mapping[str, str], own: tuple[str, ...]) -> Proxy | None:
    name, value = _first(env, own)
    if not value:
        name, value = _first(env, _ALL_VARS)
    return Proxy.parse(value, name) if value else None


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str]:
    """The first of ``names`` set to something other than blanks, and its value; else ("", "")."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return "", ""


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _redact(url: str) -> str:
    """``url`` with everything before its last ``@`` (``user:password``) shown as ``***``, for
    messages about unusable values: a password may hold ``/``, ``?`` or ``#``, so no parser decides."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
