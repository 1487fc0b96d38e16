"""Registry authentication: ``WWW-Authenticate`` challenges, Basic and Bearer tokens.

The flow is Docker's token authentication: a request without (sufficient)
credentials gets ``401`` and a challenge such as::

    Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a:pull"

We then ask the realm for a token for the scopes we need (anonymously when no
credentials are configured, which is how public.ecr.aws and Docker Hub serve
public images), cache it until shortly before it expires, and retry once.
Parsing is pure; token requests go through a caller-supplied send function so
they share the session's retries, TLS settings and transport.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from dtbundle.errors import AuthenticationError, RegistryProtocolError
from dtbundle.registry.bounded import read_json_object
from dtbundle.registry.credentials import CredentialResolver, Credentials

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
DEFAULT_TOKEN_LIFETIME = 60  # seconds, per the Docker token spec when expires_in is absent
_EXPIRY_MARGIN = 10  # renew this many seconds before a token expires
_CLIENT_ID = "dtbundle"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lower case
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        scope = self.params.get("scope")
        return tuple(scope.split(" ")) if scope else ()


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value (possibly several challenges) into Challenges."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if not match:
            break
        scheme = match.group(1).lower()
        rest = rest[match.end() :]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM_RE.match(rest)
            # A bare token followed by whitespace starts the next challenge.
            if not pm or (pm.group(2) is None and pm.group(3) == "" and "=" not in rest[: pm.end()]):
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[pm.end() :]
        challenges.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return challenges


def scope_for(repository: str, actions: Iterable[str]) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username or ''}:{credentials.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass
class _Token:
    value: str
    expires_at: float


SendFn = Callable[[httpx.Request], httpx.Response]


class Authenticator:
    """Answers challenges and remembers, per host, how to authenticate next time."""

    def __init__(self, credentials: CredentialResolver, send: SendFn, max_json_bytes: int) -> None:
        self.credentials = credentials
        self._send = send
        self._max_json = max_json_bytes
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, frozenset[str]], _Token] = {}

    def authorization(self, host: str, registry: str, repository: str, scopes: Iterable[str]) -> str | None:
        """A header value to send pre-emptively, if this host has challenged us before."""
        wanted = frozenset(scopes)
        with self._lock:
            challenge = self._challenges.get(host)
            if challenge is None:
                return None
            if challenge.scheme == "basic":
                creds = self.credentials.lookup(registry, repository)
                return basic_header(creds) if creds and creds.password is not None else None
            now = time.monotonic()
            for (token_host, token_scopes), token in self._tokens.items():
                if token_host == host and wanted <= token_scopes and token.expires_at > now:
                    return f"Bearer {token.value}"
        return None

    def respond(self, host: str, registry: str, repository: str, scopes: Iterable[str], header: str) -> str:
        """Answer a 401's challenge; return the Authorization value to retry with."""
        challenges = parse_challenges(header)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            raise RegistryProtocolError(
                f"registry {registry} asked for authentication with an unsupported scheme: {header[:80]!r}"
            )
        creds = self.credentials.lookup(registry, repository)
        with self._lock:
            self._challenges[host] = chosen
        if chosen.scheme == "basic":
            if creds is None or creds.password is None:
                raise AuthenticationError(
                    f"registry {registry} requires a username and password, and none was found "
                    f"(looked in: {self.credentials.sources_checked()}); log in with "
                    "'skopeo login' / 'docker login' or pass credentials explicitly"
                )
            return basic_header(creds)
        wanted = sorted(set(scopes) | set(chosen.scopes))
        token = self._fetch_token(chosen, registry, wanted, creds)
        with self._lock:
            self._tokens[(host, frozenset(wanted))] = token
        return f"Bearer {token.value}"

    def forget(self, host: str) -> None:
        """Drop cached tokens of a host (after it refused one)."""
        with self._lock:
            for key in [k for k in self._tokens if k[0] == host]:
                del self._tokens[key]

    def _fetch_token(self, challenge: Challenge, registry: str, scopes: list[str], creds: Credentials | None) -> _Token:
        realm = challenge.realm
        if not realm.startswith(("https://", "http://")):
            raise RegistryProtocolError(f"registry {registry} named an invalid token realm {realm!r}")
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant, as 'docker login' with an identity token does.
            form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", _CLIENT_ID),
                *params,
                *(("scope", s) for s in scopes),
            ]
            request = httpx.Request(
                "POST",
                realm,
                content=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            params.extend(("scope", s) for s in scopes)
            headers = {}
            if creds is not None and creds.password is not None:
                headers["Authorization"] = basic_header(creds)
            request = httpx.Request(
                "GET",
                f"{realm}{'&' if '?' in realm else '?'}{urlencode(params)}",
                headers=headers,
            )
        response = self._send(request)
        try:
            if response.status_code in (401, 403):
                who = creds.describe() if creds else "anonymous access (no credentials found)"
                raise AuthenticationError(
                    f"token service of registry {registry} refused {who} for {' '.join(scopes) or 'access'}"
                )
            if response.status_code != 200:
                raise AuthenticationError(f"token service of registry {registry} answered HTTP {response.status_code}")
            body = read_json_object(response, self._max_json, f"token response of registry {registry}")
        finally:
            response.close()
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryProtocolError(f"token service of registry {registry} returned no token")
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        expires = time.monotonic() + max(float(lifetime) - _EXPIRY_MARGIN, float(lifetime) / 2)
        return _Token(value, expires)
