"""Start real CNCF distribution registries (Debian's ``docker-registry``) on loopback.

Variants: plain HTTP, htpasswd Basic auth, Bearer token auth (with
:class:`~dtbundle.sandbox.token_server.TokenServer`), each with or without TLS
from a throwaway CA. Every server binds 127.0.0.1 on a free port and keeps its
storage in its own directory, so tests can run in parallel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from dtbundle.sandbox.lifecycle import stop_process
from dtbundle.sandbox.pki import KeyPair, issue
from dtbundle.sandbox.token_server import TokenPolicy, TokenServer

REGISTRY_BINARY = "docker-registry"
_START_TIMEOUT = 20.0
_START_ATTEMPTS = 3

AuthMode = Literal["none", "basic", "token"]


class RegistryStartError(RuntimeError):
    pass


@dataclass
class RegistryServer:
    """A running registry. ``address`` is what goes into image references."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    auth: AuthMode = "none"
    tls: bool = False
    ca_cert: Path | None = None
    users: dict[str, str] = field(default_factory=dict)
    token_server: TokenServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def log(self) -> str:
        return (self.workdir / "registry.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.process)
        if self.token_server is not None:
            self.token_server.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry_binary() -> str:
    found = shutil.which(REGISTRY_BINARY) or (
        "/usr/bin/docker-registry" if os.path.exists("/usr/bin/docker-registry") else None
    )
    if not found:
        raise RegistryStartError(
            "docker-registry is not installed; run ./scripts/setup.sh (apt-get install docker-registry)"
        )
    return found


def _htpasswd(users: dict[str, str]) -> str:
    import bcrypt  # the sandbox extra: only the basic-auth variant needs it

    return "".join(
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()}\n" for user, pw in users.items()
    )


def _config(
    port: int,
    workdir: Path,
    auth: AuthMode,
    tls: tuple[Path, Path] | None,
    token: TokenServer | None,
    rootcert: Path | None,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {workdir / 'storage'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: dtbundle-sandbox-not-a-secret",
    ]
    if tls:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if auth == "basic":
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: dtbundle-sandbox",
            f"    path: {workdir / 'htpasswd'}",
        ]
    elif auth == "token":
        assert token is not None and rootcert is not None
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token.realm}",
            f"    service: {token.service}",
            f"    issuer: {token.issuer}",
            f"    rootcertbundle: {rootcert}",
        ]
    return "\n".join(lines) + "\n"


def start_registry(
    workdir: Path,
    *,
    auth: AuthMode = "none",
    tls: bool = False,
    ca: KeyPair | None = None,
    users: dict[str, str] | None = None,
    public_prefixes: tuple[str, ...] = (),
    refresh_tokens: dict[str, str] | None = None,
    read_only_users: frozenset[str] = frozenset(),
) -> RegistryServer:
    """Start a registry and wait until it answers ``/v2/``. ``ca`` is needed for tls/token."""
    workdir.mkdir(parents=True, exist_ok=True)
    users = dict(users or {})
    tls_files: tuple[Path, Path] | None = None
    ca_path: Path | None = None
    if tls or auth == "token":
        if ca is None:
            raise ValueError("a CA is needed for TLS or token auth")
        ca_path = workdir / "ca.crt"
        ca_path.write_bytes(ca.cert_pem())
    if tls:
        assert ca is not None
        tls_files = issue(ca, "127.0.0.1").write(workdir, "server")
    token: TokenServer | None = None
    if auth == "basic":
        (workdir / "htpasswd").write_text(_htpasswd(users))
    elif auth == "token":
        assert ca is not None
        token = TokenServer(
            issue(ca, "token-signer", server=False),
            TokenPolicy(
                users=users,
                refresh_tokens=dict(refresh_tokens or {}),
                public_prefixes=public_prefixes,
                read_only_users=read_only_users,
            ),
        )
    binary = registry_binary()
    last_error = ""
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        config = workdir / "config.yml"
        config.write_text(_config(port, workdir, auth, tls_files, token, ca_path))
        log = (workdir / "registry.log").open("wb")
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_registry_env(),
        )
        log.close()
        server = RegistryServer(port, workdir, process, auth, tls, ca_path, users, token)
        try:
            ready = _wait_ready(server)
        except BaseException:  # e.g. the sandbox was told to stop: leave no registry behind
            server.stop()
            raise
        if ready:
            return server
        last_error = server.log()
        server.token_server = None  # keep the token server for the next attempt
        server.stop()
    if token is not None:
        token.stop()
    raise RegistryStartError(f"docker-registry did not start: {last_error[-500:]}")


def _registry_env() -> dict[str, str]:
    """Our environment without REGISTRY_*: distribution reads those as configuration overrides, and
    skopeo's and podman's REGISTRY_AUTH_FILE (the auth.json path) would break the ``auth`` section."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def _wait_ready(server: RegistryServer) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(server.ca_cert)) if server.tls and server.ca_cert else True
    )
    with httpx.Client(verify=verify, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{server.url}/v2/").status_code in (200, 401):
                    return True
            time.sleep(0.05)
    return False
