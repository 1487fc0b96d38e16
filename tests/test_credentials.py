"""Credentials come from explicit options, Docker's config (helpers, store, auths) and the
containers auth file, in that order, and are used against a real Basic-auth registry."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from dtbundle.errors import CredentialsConfigError
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.registries import PASSWORD, USER, fast_config, ref_in


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _helper(bin_dir: Path, name: str, answers: dict[str, tuple[str, str]]) -> None:
    """A real docker-credential-<name> executable answering 'get' from a table."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    table = json.dumps({k: {"Username": u, "Secret": s} for k, (u, s) in answers.items()})
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"table = json.loads({table!r})\n"
        "server = sys.stdin.read().strip()\n"
        "if sys.argv[1:] != ['get'] or server not in table:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(table[server]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "home"


def _resolver(home: Path, **env: str) -> CredentialResolver:
    return CredentialResolver(env={"HOME": str(home), **env}, home=home)


def test_docker_config_auths_inline(home: Path) -> None:
    _write(
        home / ".docker/config.json",
        {"auths": {"https://reg.example:5000/v1/": {"auth": _auth("bob", "pw1")}}},
    )
    creds = _resolver(home).lookup("reg.example:5000")
    assert creds is not None and (creds.username, creds.password) == ("bob", "pw1")
    assert "config.json" in creds.source


def test_docker_hub_key_matches_docker_io(home: Path) -> None:
    _write(
        home / ".docker/config.json",
        {"auths": {"https://index.docker.io/v1/": {"auth": _auth("hub", "pw")}}},
    )
    creds = _resolver(home).lookup("docker.io")
    assert creds is not None and creds.username == "hub"


def test_identity_token_entry(home: Path) -> None:
    _write(
        home / ".docker/config.json",
        {"auths": {"reg.example": {"auth": _auth("u", ""), "identitytoken": "tok"}}},
    )
    creds = _resolver(home).lookup("reg.example")
    assert creds is not None and creds.identity_token == "tok"


def test_cred_helper_wins_over_store_and_auths(home: Path, tmp_path: Path) -> None:
    _helper(tmp_path / "bin", "special", {"reg.example": ("helper-user", "helper-secret")})
    _helper(
        tmp_path / "bin",
        "store",
        {"reg.example": ("store-user", "store-secret"), "other.example": ("store-user", "s2")},
    )
    _write(
        home / ".docker/config.json",
        {
            "credHelpers": {"reg.example": "special"},
            "credsStore": "store",
            "auths": {"reg.example": {"auth": _auth("inline", "x")}},
        },
    )
    resolver = _resolver(home)
    creds = resolver.lookup("reg.example")
    assert creds is not None and (creds.username, creds.password) == (
        "helper-user",
        "helper-secret",
    )
    assert "credHelpers" in creds.source
    other = resolver.lookup("other.example")
    assert other is not None and other.username == "store-user" and "credsStore" in other.source


def test_helper_identity_token_and_not_found(home: Path, tmp_path: Path) -> None:
    _helper(tmp_path / "bin", "store", {"reg.example": ("<token>", "refresh-me")})
    _write(home / ".docker/config.json", {"credsStore": "store"})
    creds = _resolver(home).lookup("reg.example")
    assert creds is not None and creds.identity_token == "refresh-me" and creds.password is None
    assert _resolver(home).lookup("nothing.example") is None


def test_missing_helper_is_a_clear_usage_error(home: Path) -> None:
    _write(home / ".docker/config.json", {"credHelpers": {"reg.example": "nosuchhelper"}})
    with pytest.raises(CredentialsConfigError) as info:
        _resolver(home).lookup("reg.example")
    assert "docker-credential-nosuchhelper" in str(info.value) and info.value.exit_code == 2


def test_containers_auth_file_with_namespace_keys(home: Path, tmp_path: Path) -> None:
    auth_file = _write(
        tmp_path / "auth.json",
        {
            "auths": {
                "reg.example": {"auth": _auth("generic", "a")},
                "reg.example/team": {"auth": _auth("team", "b")},
                "reg.example/team/special": {"auth": _auth("special", "c")},
            }
        },
    )
    resolver = _resolver(home, REGISTRY_AUTH_FILE=str(auth_file))
    assert resolver.lookup("reg.example", "team/special/app").username == "special"  # type: ignore[union-attr]
    assert resolver.lookup("reg.example", "team/app").username == "team"  # type: ignore[union-attr]
    assert resolver.lookup("reg.example", "teamwork/app").username == "generic"  # type: ignore[union-attr]


def test_xdg_runtime_dir_auth_file(home: Path, tmp_path: Path) -> None:
    _write(
        tmp_path / "run/containers/auth.json",
        {"auths": {"reg.example": {"auth": _auth("podman", "p")}}},
    )
    creds = _resolver(home, XDG_RUNTIME_DIR=str(tmp_path / "run")).lookup("reg.example")
    assert creds is not None and creds.username == "podman"


def test_precedence_explicit_then_docker_then_containers(home: Path, tmp_path: Path) -> None:
    _write(home / ".docker/config.json", {"auths": {"reg.example": {"auth": _auth("docker", "d")}}})
    auth_file = _write(
        tmp_path / "auth.json",
        {
            "auths": {
                "reg.example": {"auth": _auth("containers", "c")},
                "only.example": {"auth": _auth("containers", "c")},
            }
        },
    )
    env = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(auth_file)}
    plain = CredentialResolver(env=env, home=home)
    assert plain.lookup("reg.example").username == "docker"  # type: ignore[union-attr]
    assert plain.lookup("only.example").username == "containers"  # type: ignore[union-attr]
    explicit = CredentialResolver({"reg.example": Credentials("--username", "cli", "x")}, env=env, home=home)
    assert explicit.lookup("reg.example").username == "cli"  # type: ignore[union-attr]
    assert explicit.lookup("only.example").username == "containers"  # type: ignore[union-attr]


@pytest.mark.parametrize("content", ["{not json", '{"auths": {"r": {"auth": "%%%"}}}', '{"auths": []}'])
def test_broken_config_files_are_named_without_secrets(home: Path, content: str) -> None:
    path = home / ".docker/config.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(CredentialsConfigError) as info:
        _resolver(home).lookup("r")
    assert str(path) in str(info.value)


def test_docker_config_env_and_real_registry_login(
    home: Path, tmp_path: Path, basic_registry: RegistryServer, repo: str
) -> None:
    _write(
        tmp_path / "dockercfg/config.json",
        {"auths": {basic_registry.address: {"auth": _auth(USER, PASSWORD)}}},
    )
    resolver = _resolver(home, DOCKER_CONFIG=str(tmp_path / "dockercfg"))
    with RegistryClient(fast_config(plain_http=True), resolver) as client:
        # Authenticated (no 401 error): the tag simply does not exist.
        assert client.head_manifest(ref_in(basic_registry, repo, "nothing")) is None
