"""A small Docker token server, the other half of the registry's ``auth.token`` mode.

It checks Basic credentials (or an OAuth2 refresh token) and issues ES256 JWTs
whose ``x5c`` header carries a certificate chaining to the registry's
``rootcertbundle``, so the real registry verifies every token exactly as it
would one from a production token service. Anonymous callers get ``pull`` on
repositories under the public prefixes only.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from dtbundle.sandbox._http import JsonHandler, LocalServer
from dtbundle.sandbox.pki import KeyPair


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenPolicy:
    users: dict[str, str]  # user -> password
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    public_prefixes: tuple[str, ...] = ()  # anonymous pull allowed below these
    read_only_users: frozenset[str] = frozenset()
    lifetime: int = 300


class TokenServer:
    """Serve ``/token`` on 127.0.0.1 on a free port, in a daemon thread."""

    def __init__(
        self,
        signer: KeyPair,
        policy: TokenPolicy,
        issuer: str = "dtbundle-sandbox-issuer",
        service: str = "dtbundle-sandbox-registry",
    ) -> None:
        self.signer, self.policy, self.issuer, self.service = signer, policy, issuer, service
        self.requests: list[dict[str, Any]] = []  # who asked for what (never a secret)
        self._lock = threading.Lock()
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                valid, user = server._basic_user(self.headers.get("Authorization"))
                if not valid:
                    return self.reply(401, {"details": "invalid credentials"})
                self._grant(user, query.get("scope", []), query.get("service", [""])[0])

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                token = form.get("refresh_token", [""])[0]
                user = server.policy.refresh_tokens.get(token)
                if form.get("grant_type") != ["refresh_token"] or user is None:
                    return self.reply(401, {"details": "invalid refresh token"})
                self._grant(user, form.get("scope", []), form.get("service", [""])[0])

            def _grant(self, user: str | None, scopes: list[str], service: str) -> None:
                with server._lock:
                    server.requests.append({"user": user, "scopes": scopes, "service": service})
                token = server.issue(user, scopes)
                self.reply(
                    200,
                    {"token": token, "access_token": token, "expires_in": server.policy.lifetime},
                )

        self._server = LocalServer(Handler)
        self.port = self._server.port
        self.realm = f"{self._server.url}/token"

    def stop(self) -> None:
        self._server.stop()

    def _basic_user(self, header: str | None) -> tuple[bool, str | None]:
        """(valid, user): user None is anonymous; valid False means bad credentials."""
        if not header:
            return True, None
        if not header.startswith("Basic "):
            return False, None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False, None
        expected = self.policy.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return False, None
        return True, user

    def _allowed(self, user: str | None, name: str, actions: Iterable[str]) -> list[str]:
        if user is None:
            public = any(name == p or name.startswith(p.rstrip("/") + "/") for p in self.policy.public_prefixes)
            return ["pull"] if public and "pull" in actions else []
        if user in self.policy.read_only_users:
            return [a for a in actions if a == "pull"]
        return [a for a in actions if a in ("pull", "push", "delete", "*")]

    def issue(self, user: str | None, scopes: Iterable[str]) -> str:
        access = []
        for scope in scopes:
            for single in scope.split(" "):
                kind, _, rest = single.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                granted = self._allowed(user, name, actions.split(","))
                if granted:
                    access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.policy.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        cert_der = self.signer.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self.signer.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
