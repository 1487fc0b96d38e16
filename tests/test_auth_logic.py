"""Pure parts of authentication: challenge parsing and the token cache's expiry."""

from __future__ import annotations

import httpx
import pytest

from dtbundle.registry import CredentialResolver
from dtbundle.registry import auth as auth_module
from dtbundle.registry.auth import Authenticator, parse_challenges


def test_parse_bearer_challenge_with_several_scopes_and_escapes() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope",'
        'note="say \\"hi\\""'
    )
    (challenge,) = parse_challenges(header)
    assert challenge.scheme == "bearer" and challenge.realm == "https://auth.example/token"
    assert challenge.service == "registry.example"
    assert challenge.scopes == ("repository:a/b:pull,push", "repository:c:pull")
    assert challenge.params["note"] == 'say "hi"'


def test_parse_several_challenges_in_one_header() -> None:
    challenges = parse_challenges('Basic realm="r1", Bearer realm="https://t/token",service=s')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].service == "s"


def test_cached_token_is_used_until_shortly_before_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: now[0])
    issued: list[str] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        issued.append(str(request.url))
        return httpx.Response(200, json={"token": f"t{len(issued)}", "expires_in": 60}, request=request)

    authenticator = Authenticator(CredentialResolver(use_config_files=False), token_service, 65536)
    challenge = 'Bearer realm="https://auth.test/token",service="reg"'
    scopes = ["repository:a:pull"]
    assert authenticator.authorization("reg", "reg", "a", scopes) is None  # never challenged yet
    assert authenticator.respond("reg", "reg", "a", scopes, challenge) == "Bearer t1"
    assert "scope=repository%3Aa%3Apull" in issued[0] and "service=reg" in issued[0]
    now[0] += 49  # within 60 s minus the 10 s margin
    assert authenticator.authorization("reg", "reg", "a", scopes) == "Bearer t1"
    # A narrower scope is covered by the cached token; a wider one is not.
    assert authenticator.authorization("reg", "reg", "a", []) == "Bearer t1"
    assert authenticator.authorization("reg", "reg", "a", ["repository:a:pull,push"]) is None
    now[0] += 2  # past 50 s: renew before the registry would refuse it
    assert authenticator.authorization("reg", "reg", "a", scopes) is None
