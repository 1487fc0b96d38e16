"""Proxies as curl honours them, end to end: HTTPS_PROXY/HTTP_PROXY/NO_PROXY and --proxy through
a real tinyproxy (``tests/support/proxy.py``) to real registries, token services and the
Deployment API; the proxy's own log shows which requests passed through it. The selection
rules themselves are unit-tested in ``test_proxy_rules.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dtbundle.oci import Platform
from dtbundle.oci.reference import Reference
from dtbundle.registry import CredentialResolver, RegistryClient
from dtbundle.registry.proxy import ProxySettings
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox import images
from dtbundle.sandbox.pki import KeyPair
from dtbundle.sandbox.registry_server import RegistryServer, free_port
from tests.support.cli import assert_clean_error, record_backoff, run, run_in_process
from tests.support.proxy import TinyProxy, TlsFront, start_tinyproxy
from tests.support.registries import PASSWORD, USER, Exported, fast_config, make_client, sample

PROXY_USER, PROXY_PASSWORD = "carol", "proxy-secret-4711"


def test_unusable_proxy_is_exit_2_naming_its_source(keys_dir: Path, tmp_path: Path) -> None:
    secret = "s3cr3t-socks"
    args = export(keys_dir, tmp_path / "b.tar.zst", "127.0.0.1:1/a:1")
    line = assert_clean_error(run_in_process(*args, "--proxy", f"socks5://u:{secret}@127.0.0.1:1080"), 2)
    assert "--proxy" in line and "socks5://***@127.0.0.1:1080" in line and secret not in line
    line = assert_clean_error(run_in_process(*args, env={"HTTPS_PROXY": f"socks5h://u:{secret}@p:1"}), 2)
    assert "HTTPS_PROXY" in line and secret not in line
    versions = ("dynatrace", "versions", "--environment-url", "https://abc12345.live.dynatrace.com")
    line = assert_clean_error(run_in_process(*versions, "--proxy", "socks5://p:1", env={"DT_API_TOKEN": "t"}), 2)
    assert "--proxy" in line


# -- through a real proxy -------------------------------------------------------------------------------
@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[TinyProxy]:
    (tmp_path / "proxy").mkdir()
    proxy = start_tinyproxy(tmp_path / "proxy")
    yield proxy
    proxy.stop()


@pytest.fixture
def auth_proxy(tmp_path: Path) -> Iterator[TinyProxy]:
    (tmp_path / "auth-proxy").mkdir()
    proxy = start_tinyproxy(tmp_path / "auth-proxy", credentials=(PROXY_USER, PROXY_PASSWORD))
    yield proxy
    proxy.stop()


def small_image(server: RegistryServer, repository: str) -> str:
    """Push a two-platform image to ``server``; its reference."""
    built = images.build_index(
        [
            images.build_image(Platform("linux", p), [images.make_layer(f"{repository}-{p}", 2000)])
            for p in ("amd64", "arm64")
        ]
    )
    with make_client(server) as client:
        images.push(client, Reference(server.address, repository, "1"), built)
    return f"{server.address}/{repository}:1"


def export(keys_dir: Path, out: Path, *args: str) -> tuple[str, ...]:
    return ("export", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(out), "--json", *args)


def test_tls_registry_through_https_proxy_uses_connect(
    tinyproxy: TinyProxy, tls_registry: RegistryServer, keys_dir: Path, tmp_path: Path, repo: str
) -> None:
    ref = small_image(tls_registry, repo)
    mark = tinyproxy.mark()
    env = {"HTTPS_PROXY": tinyproxy.url(), "HTTP_PROXY": "http://127.0.0.1:1"}  # the wrong one would fail
    proc = run_in_process(
        *export(keys_dir, tmp_path / "b.tar.zst", "--ca-cert", str(tls_registry.ca_cert), ref), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b.tar.zst").exists()
    seen = tinyproxy.requests_since(mark)
    assert seen and all(r == f"CONNECT {tls_registry.address} HTTP/1.1" for r in seen), seen


def test_https_proxy_tunnels_to_a_tls_registry(
    tinyproxy: TinyProxy, tls_registry: RegistryServer, ca: KeyPair, keys_dir: Path, tmp_path: Path, repo: str
) -> None:
    """An https:// proxy: TLS to the proxy (verified with --ca-cert too), CONNECT, TLS to the registry."""
    ref = small_image(tls_registry, repo)
    front = TlsFront(ca, tinyproxy.port, tmp_path)
    try:
        mark = tinyproxy.mark()
        args = export(keys_dir, tmp_path / "b.tar.zst", "--ca-cert", str(tls_registry.ca_cert), ref)
        proc = run_in_process(*args, env={"HTTPS_PROXY": front.url()})
        assert proc.returncode == 0, proc.stderr
        assert front.connections and f"CONNECT {tls_registry.address} HTTP/1.1" in tinyproxy.requests_since(mark)
        # The proxy's certificate is verified: without the CA it is not trusted.
        proc = run_in_process(*export(keys_dir, tmp_path / "c.tar.zst", ref), env={"HTTPS_PROXY": front.url()})
        line = assert_clean_error(proc, 1)
        assert f"through proxy {front.url()} (from HTTPS_PROXY)" in line and "certificate" in line.lower(), line
    finally:
        front.stop()


def test_plain_registry_through_http_proxy_uses_absolute_uris(
    tinyproxy: TinyProxy,
    plain_registry: RegistryServer,
    seeded: list[images.SampleImage],
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    ref = str(sample(seeded, "operator").ref)
    mark = tinyproxy.mark()
    env = {"HTTP_PROXY": tinyproxy.url(), "HTTPS_PROXY": "http://127.0.0.1:1"}
    proc = run_in_process(*export(keys_dir, tmp_path / "b.tar.zst", "--plain-http", ref), env=env)
    assert proc.returncode == 0, proc.stderr
    seen = tinyproxy.requests_since(mark)
    prefix = f"http://{plain_registry.address}/v2/"
    assert any(r.startswith(f"GET {prefix}") and "/manifests/" in r for r in seen), seen
    assert any("/blobs/sha256:" in r for r in seen), seen
    assert all(r.split()[1].startswith(prefix) for r in seen), seen
    # NO_PROXY naming the registry (with its port): the proxy sees nothing at all.
    for no_proxy in (plain_registry.address, "127.0.0.1", "example.com, 127.0.0.0/8"):
        mark = tinyproxy.mark()
        again = run_in_process(
            *export(keys_dir, tmp_path / "c.tar.zst", "--plain-http", "--force", ref), env={**env, "no_proxy": no_proxy}
        )
        assert again.returncode == 0, again.stderr
        assert tinyproxy.lines_since(mark) == [], no_proxy
    # NO_PROXY for another port of the same host does not bypass it.
    mark = tinyproxy.mark()
    other = f"127.0.0.1:{plain_registry.port + 1}"
    proc = run_in_process(
        *export(keys_dir, tmp_path / "d.tar.zst", "--plain-http", ref), env={**env, "NO_PROXY": other}
    )
    assert proc.returncode == 0, proc.stderr
    assert tinyproxy.requests_since(mark)


def test_proxy_option_overrides_the_environment(
    tinyproxy: TinyProxy,
    plain_registry: RegistryServer,
    seeded: list[images.SampleImage],
    keys_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_backoff(monkeypatch)
    ref = str(sample(seeded, "tool").ref)
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead}
    mark = tinyproxy.mark()
    proc = run_in_process(
        *export(keys_dir, tmp_path / "b.tar.zst", "--plain-http", "--proxy", tinyproxy.url(), ref), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert any(r.startswith(f"GET http://{plain_registry.address}/v2/") for r in tinyproxy.requests_since(mark))
    # --proxy "" connects directly, whatever the environment says.
    mark = tinyproxy.mark()
    proc = run_in_process(*export(keys_dir, tmp_path / "c.tar.zst", "--plain-http", "--proxy", "", ref), env=env)
    assert proc.returncode == 0, proc.stderr
    assert tinyproxy.lines_since(mark) == []


def test_loopback_http_fallback_through_the_proxy(
    tinyproxy: TinyProxy, plain_registry: RegistryServer, seeded: list[images.SampleImage]
) -> None:
    """No --plain-http: HTTPS through a CONNECT tunnel meets plain HTTP, and the retry over HTTP is proxied too."""
    image = sample(seeded, "tool")
    settings = ProxySettings.from_environment({"HTTPS_PROXY": tinyproxy.url(), "HTTP_PROXY": tinyproxy.url()})
    mark = tinyproxy.mark()
    with RegistryClient(fast_config(proxy=settings), CredentialResolver(use_config_files=False)) as client:
        assert client.get_manifest(image.ref).digest == image.digest
    assert tinyproxy.requests_since(mark) == [
        f"CONNECT {plain_registry.address} HTTP/1.1",
        f"GET http://{plain_registry.address}/v2/{image.ref.repository}/manifests/{image.ref.tag} HTTP/1.1",
    ]


def test_import_pushes_through_the_proxy(
    tinyproxy: TinyProxy, plain_registry: RegistryServer, exported: Exported, repo: str
) -> None:
    target = f"{plain_registry.address}/{repo}"
    mark = tinyproxy.mark()
    args = ("import", "--plain-http", "--public-key", str(exported.pub), "--registry", target, str(exported.path))
    proc = run(*args, env={"HTTP_PROXY": tinyproxy.url()})
    assert proc.returncode == 0, proc.stderr
    methods = {r.split()[0] for r in tinyproxy.requests_since(mark)}
    assert {"HEAD", "POST", "PUT"} <= methods, methods  # blob checks, upload sessions, blobs and manifests


def test_token_auth_through_the_proxy(
    tinyproxy: TinyProxy, token_registry: RegistryServer, keys_dir: Path, tmp_path: Path, repo: str
) -> None:
    ref = small_image(token_registry, repo)
    assert token_registry.token_server is not None
    mark = tinyproxy.mark()
    args = export(keys_dir, tmp_path / "b.tar.zst", "--plain-http", "--username", USER, "--password-stdin", ref)
    proc = run(*args, stdin=PASSWORD + "\n", env={"http_proxy": tinyproxy.url()})
    assert proc.returncode == 0, proc.stderr
    seen = tinyproxy.requests_since(mark)
    realm = f"GET http://127.0.0.1:{token_registry.token_server.port}/"
    assert any(r.startswith(realm) for r in seen), seen  # the token service, through the proxy
    assert any(r.startswith(f"GET http://{token_registry.address}/v2/{repo}/manifests/") for r in seen), seen


def test_proxy_credentials_go_to_the_proxy_and_are_never_shown(
    auth_proxy: TinyProxy,
    plain_registry: RegistryServer,
    tls_registry: RegistryServer,
    seeded: list[images.SampleImage],
    keys_dir: Path,
    tmp_path: Path,
    repo: str,
) -> None:
    plain_ref = str(sample(seeded, "tool").ref)
    tls_ref = small_image(tls_registry, repo)
    tls_args = ("--ca-cert", str(tls_registry.ca_cert), tls_ref)
    good = {"HTTPS_PROXY": auth_proxy.url(), "HTTP_PROXY": auth_proxy.url()}
    for n, args in enumerate([("--plain-http", plain_ref), tls_args]):
        mark = auth_proxy.mark()
        proc = run(*export(keys_dir, tmp_path / f"ok{n}.tar.zst", *args), env=good)
        assert proc.returncode == 0, proc.stderr
        assert PROXY_PASSWORD not in proc.stdout + proc.stderr and auth_proxy.requests_since(mark)
    wrong_password = "wrong-proxy-pass-99"
    wrong = {"HTTPS_PROXY": auth_proxy.url(PROXY_USER, wrong_password)}
    address = f"http://***@127.0.0.1:{auth_proxy.port}"
    # Plain HTTP: the proxy answers the forwarded request 407. TLS: it refuses the CONNECT.
    for source, args in (("--proxy", ("--plain-http", plain_ref)), ("HTTPS_PROXY", tls_args)):
        option = ("--proxy", auth_proxy.url(PROXY_USER, wrong_password)) if source == "--proxy" else ()
        proc = run(*export(keys_dir, tmp_path / "bad.tar.zst", *option, *args), env=wrong)
        line = assert_clean_error(proc, 1)
        assert f"proxy {address} (from {source})" in line and "refused its credentials" in line, line
        assert wrong_password not in proc.stdout + proc.stderr and not (tmp_path / "bad.tar.zst").exists()
    # No credentials at all: the message says the proxy wants some.
    proc = run(
        *export(keys_dir, tmp_path / "bad.tar.zst", "--plain-http", plain_ref),
        env={"HTTP_PROXY": f"http://127.0.0.1:{auth_proxy.port}"},
    )
    assert "requires authentication" in assert_clean_error(proc, 1)


def test_an_unreachable_proxy_is_a_clear_error(
    plain_registry: RegistryServer,
    tls_registry: RegistryServer,
    seeded: list[images.SampleImage],
    keys_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = record_backoff(monkeypatch)
    dead = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{free_port()}"
    ref = str(sample(seeded, "tool").ref)
    proc = run_in_process(*export(keys_dir, tmp_path / "b.tar.zst", "--plain-http", ref), env={"HTTP_PROXY": dead})
    line = assert_clean_error(proc, 1)
    shown = dead.replace(f"{PROXY_USER}:{PROXY_PASSWORD}", "***")
    assert f"through proxy {shown} (from HTTP_PROXY)" in line and "the proxy cannot be reached" in line, line
    assert PROXY_PASSWORD not in proc.stdout + proc.stderr and sleeps  # retried, as any connection error
    proc = run_in_process(
        *export(
            keys_dir, tmp_path / "b.tar.zst", "--ca-cert", str(tls_registry.ca_cert), f"{tls_registry.address}/x/y:1"
        ),
        env={"https_proxy": dead},
    )
    line = assert_clean_error(proc, 1)
    assert "(from https_proxy)" in line and "the proxy cannot be reached" in line and PROXY_PASSWORD not in line


def test_the_deployment_api_through_the_proxy(
    tinyproxy: TinyProxy, auth_proxy: TinyProxy, plain_registry: RegistryServer
) -> None:
    api = dtsandbox.DeploymentApi("api-token-123")
    env = {"DT_API_TOKEN": "api-token-123", "HTTP_PROXY": "http://127.0.0.1:1"}
    try:
        mark = tinyproxy.mark()
        empty_mirror = ("--plain-http", "--dynatrace-registry", f"{plain_registry.address}/no-dynatrace-here")
        args = ("dynatrace", "versions", *empty_mirror, "--environment-url", api.url)
        proc = run_in_process(*args, "--proxy", tinyproxy.url(), env=env)
        assert proc.returncode == 0, proc.stderr
        seen = tinyproxy.requests_since(mark)
        assert any(r.startswith(f"GET {api.url}/api/v1/deployment/installer/agent/versions/") for r in seen), seen
        # The proxy refusing its credentials is not the API refusing the token.
        proc = run_in_process(*args, "--proxy", auth_proxy.url(PROXY_USER, "not-it-123"), env=env)
        line = assert_clean_error(proc, 1)
        assert "refused its credentials" in line and "(from --proxy)" in line and "not-it-123" not in line, line
    finally:
        api.stop()
