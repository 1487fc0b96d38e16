"""Authentication and TLS against real registries: htpasswd Basic, Bearer tokens from a
token server (JWTs the registry verifies against its rootcertbundle), and TLS from a
throwaway CA."""

from __future__ import annotations

import io
import os

import pytest

from dtbundle.errors import AuthenticationError, RegistryConnectionError, RegistryError
from dtbundle.oci import Descriptor, Platform, sha256_digest
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.registries import (
    PASSWORD,
    READER,
    READER_PASSWORD,
    REFRESH_TOKEN,
    USER,
    fast_config,
    make_client,
    ref_in,
)


def bare_client(**config: object) -> RegistryClient:
    """A client with no credentials and no config files: only what ``config`` says (and tiny backoff)."""
    return RegistryClient(fast_config(**config), CredentialResolver(use_config_files=False))


def _roundtrip(client: RegistryClient, server: RegistryServer, repo: str) -> None:
    built = images.build_image(Platform("linux", "arm64"), [images.make_layer(repo, 4096)])
    ref = ref_in(server, repo, "1.0")
    images.push(client, ref, built)
    assert client.get_manifest(ref).digest == built.digest
    assert client.get_blob_bytes(ref, built.blobs[1].descriptor) == built.blobs[1].data


@pytest.mark.parametrize("variant", ["basic_registry", "token_registry", "tls_registry", "tls_token_registry"])
def test_push_and_pull_with_valid_credentials(variant: str, request: pytest.FixtureRequest, repo: str) -> None:
    server: RegistryServer = request.getfixturevalue(variant)
    with make_client(server) as client:
        _roundtrip(client, server, repo)


@pytest.mark.parametrize("variant", ["basic_registry", "token_registry"])
def test_wrong_password_names_registry_and_source_but_not_the_secret(
    variant: str, request: pytest.FixtureRequest, repo: str
) -> None:
    server: RegistryServer = request.getfixturevalue(variant)
    with (
        make_client(server, password="wrong-password-123") as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get_manifest(ref_in(server, repo, "x"))
    message = str(info.value)
    assert server.address in message and "test credentials" in message and USER in message
    assert "wrong-password-123" not in message and info.value.exit_code == 1


def test_basic_registry_without_credentials_says_where_it_looked(basic_registry: RegistryServer, repo: str) -> None:
    with (
        make_client(basic_registry, user=None) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get_manifest(ref_in(basic_registry, repo, "x"))
    assert "none was found" in str(info.value) and basic_registry.address in str(info.value)


def test_anonymous_token_pulls_public_repositories_only(token_registry: RegistryServer) -> None:
    public, private = "public/app", "private/app"
    with make_client(token_registry) as admin:
        _roundtrip(admin, token_registry, public)
        _roundtrip(admin, token_registry, private)
    with make_client(token_registry, user=None) as anonymous:
        assert anonymous.get_manifest(ref_in(token_registry, public, "1.0")).digest
        with pytest.raises(AuthenticationError) as info:
            anonymous.get_manifest(ref_in(token_registry, private, "1.0"))
    assert "anonymous" in str(info.value)


def test_read_only_user_cannot_push(token_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(64)
    desc = Descriptor("application/octet-stream", sha256_digest(data), len(data))
    with (
        make_client(token_registry, user=READER, password=READER_PASSWORD) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.upload_blob(ref_in(token_registry, repo), desc, lambda: io.BytesIO(data))
    assert "push" in str(info.value) and READER in str(info.value)


def test_tokens_are_cached_per_scope(token_registry: RegistryServer, repo: str) -> None:
    assert token_registry.token_server is not None
    with make_client(token_registry) as client:
        _roundtrip(client, token_registry, repo)
        before = len(token_registry.token_server.requests)
        for _ in range(5):
            client.get_manifest(ref_in(token_registry, repo, "1.0"))
        assert len(token_registry.token_server.requests) == before


def test_cross_repository_mount_asks_for_both_scopes(token_registry: RegistryServer, repo: str) -> None:
    assert token_registry.token_server is not None
    data = os.urandom(2048)
    desc = Descriptor("application/octet-stream", sha256_digest(data), len(data))
    src, dst = ref_in(token_registry, repo + "/a"), ref_in(token_registry, repo + "/b")
    with make_client(token_registry) as client:
        assert client.upload_blob(src, desc, lambda: io.BytesIO(data)) == "uploaded"
        assert client.upload_blob(dst, desc, lambda: io.BytesIO(data), mount_from=src.repository) == "mounted"
    scopes = [set(r["scopes"]) for r in token_registry.token_server.requests]
    assert any({f"repository:{dst.repository}:pull,push", f"repository:{src.repository}:pull"} <= s for s in scopes)


def test_identity_token_uses_oauth2_refresh_grant(token_registry: RegistryServer, repo: str) -> None:
    creds = {token_registry.address: Credentials("docker config identitytoken", identity_token=REFRESH_TOKEN)}
    config = fast_config(plain_http=True)
    with RegistryClient(config, CredentialResolver(creds, use_config_files=False)) as client:
        _roundtrip(client, token_registry, repo)
    assert token_registry.token_server is not None
    assert token_registry.token_server.requests[-1]["user"] == USER


def test_tls_without_the_ca_fails_with_advice(tls_registry: RegistryServer, repo: str) -> None:
    with (
        bare_client(max_attempts=1) as client,
        pytest.raises(RegistryConnectionError) as info,
    ):
        client.get_manifest(ref_in(tls_registry, repo, "x"))
    assert "--ca-cert" in str(info.value)


def test_tls_skip_verify_is_an_explicit_opt_out(tls_registry: RegistryServer, repo: str) -> None:
    with bare_client(insecure_skip_tls_verify=True) as client:
        _roundtrip(client, tls_registry, repo)


def test_https_client_falls_back_to_http_only_for_loopback(plain_registry: RegistryServer, repo: str) -> None:
    # No --plain-http: HTTPS is tried first; a loopback registry speaking HTTP is accepted.
    with bare_client() as client:
        _roundtrip(client, plain_registry, repo)
    with (
        bare_client(loopback_plain_http_fallback=False, max_attempts=1) as strict,
        pytest.raises(RegistryConnectionError) as info,
    ):
        strict.get_manifest(ref_in(plain_registry, repo, "1.0"))
    assert "--plain-http" in str(info.value)


def test_plain_http_flag_against_tls_registry_fails_cleanly(tls_registry: RegistryServer, repo: str) -> None:
    with (
        bare_client(plain_http=True, max_attempts=1) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.get_manifest(ref_in(tls_registry, repo, "x"))
    assert "speaks HTTPS, not plain HTTP: drop --plain-http" in str(info.value)


def test_password_never_appears_in_repr() -> None:
    creds = Credentials("somewhere", USER, PASSWORD, identity_token=REFRESH_TOKEN)
    assert PASSWORD not in repr(creds) and REFRESH_TOKEN not in repr(creds)
    assert PASSWORD not in creds.describe()
