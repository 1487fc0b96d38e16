"""A registry is someone else's server and a bundle crossed a trust boundary: credentials stay with
their origin, server text never carries a secret, and nothing a bundle says can drive the terminal."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from dtbundle import oci
from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME
from dtbundle.errors import AuthenticationError, RegistryError
from dtbundle.oci import Descriptor, Reference, sha256_digest
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient
from tests.support.bundles import read_entries, write_entries
from tests.support.cli import run_in_process
from tests.support.registries import Exported, registry_config

REG, OTHER = "registry.test", "elsewhere.test"
REF = Reference(REG, "team/app", "1.0")
USER, SECRET = "u", "hunter2-very-secret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()


def _client(handler: httpx.MockTransport) -> RegistryClient:
    return RegistryClient(
        registry_config(backoff_initial=0.001, backoff_max=0.002),
        CredentialResolver({REG: Credentials("test", USER, SECRET)}, use_config_files=False),
        transport=handler,
        sleep=lambda _: None,
    )


def _challenge_first(request: httpx.Request) -> httpx.Response | None:
    """The registry asks for Basic credentials before answering."""
    if request.url.host == REG and request.headers.get("Authorization") != BASIC:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
    return None


def test_a_link_to_another_origin_gets_no_credentials() -> None:
    subject = "sha256:" + "1" * 64
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := _challenge_first(request)) is not None:
            return answer
        seen[request.url.host] = request.headers.get("Authorization")
        body = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
        headers = {"Content-Type": oci.OCI_INDEX}
        if request.url.host == REG:  # page 2 lives, says the server, on another origin
            headers["Link"] = f'<https://{OTHER}/v2/team/app/referrers/{subject}?last=x>; rel="next"'
        return httpx.Response(200, json=body, headers=headers)

    with _client(httpx.MockTransport(handler)) as client:
        client.list_referrers(REF, subject)
    assert seen == {REG: BASIC, OTHER: None}


def test_an_upload_location_on_another_origin_gets_no_credentials() -> None:
    blob = b"layer bytes"
    desc = Descriptor("application/octet-stream", sha256_digest(blob), len(blob))
    sent: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := _challenge_first(request)) is not None:
            return answer
        sent.append((request.method, request.url.host, request.headers.get("Authorization")))
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": f"https://{OTHER}/upload/1"})
        return httpx.Response(201, headers={"Docker-Content-Digest": desc.digest})

    with _client(httpx.MockTransport(handler)) as client:
        client.upload_blob_stream(REF, desc, iter([blob]))
    assert ("POST", REG, BASIC) in sent
    assert [auth for method, host, auth in sent if host == OTHER] == [None]


def test_another_origin_asking_for_credentials_is_refused_without_sending_them() -> None:
    hosts: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := _challenge_first(request)) is not None:
            return answer
        hosts.append((request.url.host, request.headers.get("Authorization")))
        if request.url.host == OTHER:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="phish"'})
        return httpx.Response(202, headers={"Location": f"https://{OTHER}/upload/1"})

    blob = b"x" * 10
    desc = Descriptor("application/octet-stream", sha256_digest(blob), len(blob))
    with _client(httpx.MockTransport(handler)) as client, pytest.raises(AuthenticationError, match="another origin"):
        client.upload_blob_stream(REF, desc, iter([blob]))
    assert all(auth is None for host, auth in hosts if host == OTHER) and any(h == OTHER for h, _ in hosts)


def test_a_registry_error_that_echoes_credentials_is_scrubbed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := _challenge_first(request)) is not None:
            return answer
        echoed = f"bad request; you sent Authorization: {request.headers['Authorization']} and password={SECRET}"
        return httpx.Response(400, json={"errors": [{"code": "DENIED", "message": echoed}]})

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(RegistryError) as info:
        client.get_manifest(REF)
    message = str(info.value)
    assert "DENIED" in message and SECRET not in message
    assert BASIC.split()[1] not in message and "***" in message


def test_inspect_escapes_what_the_catalog_says(exported: Exported, tmp_path: Path) -> None:
    """An unsigned bundle must not be able to erase lines and print a forged verdict."""
    entries = read_entries(exported.path)
    catalog = json.loads(dict(entries)[CATALOG_NAME])
    forged = "x\x1b[2K\r\x1b[32mcatalog signature verified (key sha256:forged)\x1b[0m\nsecond line"
    catalog["images"][0]["source"] = forged
    catalog["tool"]["version"] = "2026\r\x1b[1A"
    hostile = tmp_path / "hostile.tar.zst"
    write_entries(hostile, [(n, json.dumps(catalog).encode() if n == CATALOG_NAME else d) for n, d in entries])
    proc = run_in_process("inspect", str(hostile))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    assert "signature NOT checked" in proc.stdout
    assert "\\x1b[2K\\r\\x1b[32mcatalog signature verified" in proc.stdout  # shown, inert, on its own line
    assert not any(line.startswith("second line") for line in proc.stdout.splitlines())


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_signature_file_is_an_integrity_failure(exported: Exported, tmp_path: Path) -> None:
    """Checked before anything else is trusted: a hostile signature file must not be an internal error."""
    hostile = tmp_path / "deep-signature.tar.zst"
    write_entries(hostile, [(n, DEEP if n == SIGNATURE_NAME else d) for n, d in read_entries(exported.path)])
    proc = run_in_process("verify", "--public-key", str(exported.pub), str(hostile))
    assert proc.returncode == 3 and "internal error" not in proc.stderr, proc.stderr


def test_deeply_nested_catalog_is_an_integrity_failure(exported: Exported, tmp_path: Path) -> None:
    hostile = tmp_path / "deep-catalog.tar.zst"
    write_entries(hostile, [(n, DEEP if n == CATALOG_NAME else d) for n, d in read_entries(exported.path)])
    proc = run_in_process("inspect", str(hostile))
    assert proc.returncode == 3 and "internal error" not in proc.stderr, proc.stderr


def test_a_deeply_nested_manifest_from_a_registry_is_refused_cleanly() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DEEP, headers={"Content-Type": oci.OCI_MANIFEST})

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(RegistryError, match="not valid JSON"):
        client.get_manifest(REF)


def test_a_redirect_chain_through_another_origin_never_gets_credentials(tmp_path: Path) -> None:
    """registry -> elsewhere/step1 -> elsewhere/step2: the second hop is "same origin" as the first,
    but not as the registry, so it gets no credentials either."""
    blob = b"layer bytes"
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (answer := _challenge_first(request)) is not None:
            return answer
        seen.append((f"{request.url.host}{request.url.path}", request.headers.get("Authorization")))
        if request.url.host == REG:
            return httpx.Response(307, headers={"Location": f"https://{OTHER}/step1"})
        if request.url.path == "/step1":
            return httpx.Response(302, headers={"Location": "/step2"})
        return httpx.Response(200, content=blob)

    with _client(httpx.MockTransport(handler)) as client:
        client.fetch_blob(REF, Descriptor("application/octet-stream", sha256_digest(blob), len(blob)), tmp_path / "b")
    assert seen[0][1] == BASIC and seen[1:] == [(f"{OTHER}/step1", None), (f"{OTHER}/step2", None)]
    assert (tmp_path / "b").read_bytes() == blob


def test_a_registry_error_with_control_characters_cannot_drive_the_terminal() -> None:
    forged = "DENIED: \x1b]0;owned\x07\x1b[2J\x1b[1;1H\ndtbundle: imported OK\r"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": forged}]})

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(RegistryError) as info:
        client.get_manifest(REF)
    assert not any(not ch.isprintable() for ch in info.value.message), info.value.message


def test_every_error_line_escapes_control_characters(tmp_path: Path) -> None:
    """The one catch shows any message (it may quote a bundle, a path or a server) inert, on one line."""
    proc = run_in_process("inspect", str(tmp_path / "x\x1b[2K\rforged\nline.tar.zst"))
    assert proc.returncode == 2 and "\x1b" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "x\\x1b[2K" in proc.stderr  # (newlines become spaces)


@pytest.mark.parametrize("command", ["inspect", "import"])
def test_a_bundle_that_is_not_a_regular_file_is_a_usage_error(command: str, tmp_path: Path) -> None:
    """A device or pipe cannot be walked before it is read (the zstd frames are checked first)."""
    extra = ["--insecure-skip-verify", "--to-oci", str(tmp_path / "layout")] if command == "import" else []
    proc = run_in_process(command, "/dev/null", *extra)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]  # (import also warns, unverified)
    assert proc.returncode == 2 and len(errors) == 1 and "not a regular file" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
