"""Real-registry test bed: docker-registry servers on free 127.0.0.1 ports.

Session-scoped servers (plain, basic auth, token auth, TLS, token+TLS) are shared;
each test uses its own repository names so tests never see each other's data.
Only fixtures live here; the helpers tests import are in ``tests/support``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.key import generate_keys, load_private_key
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox import images
from dtbundle.sandbox.pki import KeyPair, make_ca
from dtbundle.sandbox.registry_server import RegistryServer, start_registry
from tests.support.registries import PASSWORD, READER, READER_PASSWORD, REFRESH_TOKEN, USER, Exported, make_client


@pytest.fixture(scope="session", autouse=True)
def _session_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Import's rollback records (``$XDG_STATE_HOME/dtbundle``) never land in the real home, even
    from session fixtures; each test then gets its own (below)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-session")))
        yield


@pytest.fixture(autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh ``$XDG_STATE_HOME`` per test: one test's imports never refuse another's bundles."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def ca() -> KeyPair:
    return make_ca()


@pytest.fixture(scope="session")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is not installed: run ./scripts/test.sh, which installs it")
    return path


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: object) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp(name), **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    yield from _start(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    yield from _start(tmp_path_factory, "basic", auth="basic", users={USER: PASSWORD})


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[RegistryServer]:
    yield from _start(
        tmp_path_factory,
        "token",
        auth="token",
        ca=ca,
        users={USER: PASSWORD, READER: READER_PASSWORD},
        public_prefixes=("public",),
        refresh_tokens={REFRESH_TOKEN: USER},
        read_only_users=frozenset({READER}),
    )


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[RegistryServer]:
    yield from _start(tmp_path_factory, "tls", tls=True, ca=ca)


@pytest.fixture(scope="session")
def tls_token_registry(tmp_path_factory: pytest.TempPathFactory, ca: KeyPair) -> Iterator[RegistryServer]:
    yield from _start(tmp_path_factory, "tlstoken", auth="token", tls=True, ca=ca, users={USER: PASSWORD})


@pytest.fixture
def repo() -> str:
    """A fresh repository path for one test."""
    return f"t/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def seeded(plain_registry: RegistryServer, signing_key: ec.EllipticCurvePrivateKey) -> list[images.SampleImage]:
    """The sample images, signed, on the plain registry."""
    with make_client(plain_registry, user=None) as client:
        return images.seed(client, plain_registry.address, signing_key)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keys(directory)
    return directory


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    plain_registry: RegistryServer,
    seeded: list[images.SampleImage],
    keys_dir: Path,
) -> Exported:
    path = tmp_path_factory.mktemp("bundle") / "samples.tar.zst"
    settings = ExportSettings(
        requests=tuple(requests_from([str(i.ref) for i in seeded])),
        output=path,
        signing_key=load_private_key(keys_dir / "dtbundle.key"),
        concurrency=4,
    )
    with make_client(plain_registry, user=None) as client:
        run_export(client, settings)
    return Exported(path, keys_dir / "dtbundle.key", keys_dir / "dtbundle.pub", seeded)


@pytest.fixture(scope="session")
def public(plain_registry: RegistryServer, signing_key: ec.EllipticCurvePrivateKey) -> str:
    """A public-like Dynatrace registry prefix (every public component, signed as the vendor
    signs), seeded once per session; tests only read from it."""
    prefix = f"dt{uuid.uuid4().hex[:6]}"
    with make_client(plain_registry, user=None) as client:
        dtsandbox.seed_public(client, plain_registry.address, signing_key, prefix)
    return f"{plain_registry.address}/{prefix}"
