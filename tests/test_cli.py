"""The installed CLI as a user runs it: verbs listed, exit codes, one-line errors, no
tracebacks (unless --debug), and no secret in any output."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dtbundle import __version__, oci
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.conftest import PASSWORD, USER


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DTBUNDLE_")}
    full_env.update({"HOME": "/nonexistent-home", "REGISTRY_AUTH_FILE": "/nonexistent/auth.json"})
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dtbundle", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dtbundle: error: "), proc.stderr
    return lines[0]


def test_help_lists_every_verb() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for verb in ("resolve", "keygen", "export", "verify", "inspect", "import"):
        assert f" {verb} " in proc.stdout


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"dtbundle {__version__}"


def test_resolve_text_and_json(plain_registry: RegistryServer, seeded: list[images.SampleImage]) -> None:
    operator = seeded[0]
    proc = run("resolve", "--plain-http", str(operator.ref))
    assert proc.returncode == 0, proc.stderr
    assert f"{operator.ref}@{operator.digest}" in proc.stdout and "linux/arm/v7" in proc.stdout
    proc = run("resolve", "--plain-http", "--json", *(str(i.ref) for i in seeded))
    assert proc.returncode == 0, proc.stderr
    result = {i["reference"]: i for i in json.loads(proc.stdout)["images"]}
    for image in seeded:
        got = result[str(image.ref)]
        assert got["digest"] == image.digest
        assert [p["digest"] for p in got["platforms"]] == [c.digest for c in image.manifest.children]
        signed = {a["subject"] for a in got["attachments"] if a["kind"] == "cosign.sig"}
        expected = {image.digest, *(c.digest for c in image.manifest.children)} if image.signed else set()
        assert signed == expected


def test_invalid_reference_is_usage_error() -> None:
    line = assert_clean_error(run("resolve", "Bad//Ref"), 2)
    assert "Bad//Ref" in line


def test_unreachable_registry_is_operational_error() -> None:
    line = assert_clean_error(run("resolve", "--plain-http", "127.0.0.1:9/x:1"), 1)
    assert "127.0.0.1:9" in line


def test_debug_shows_the_traceback() -> None:
    proc = run("--debug", "resolve", "Bad//Ref")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_password_stdin_against_basic_auth_registry(basic_registry: RegistryServer) -> None:
    ref = f"{basic_registry.address}/nothing/here:1"
    proc = run(
        "resolve",
        "--plain-http",
        "--username",
        USER,
        "--password-stdin",
        ref,
        stdin=PASSWORD + "\n",
    )
    # Authenticated: the error is 'not found', not 'refused'.
    line = assert_clean_error(proc, 1)
    assert "not found" in line and PASSWORD not in proc.stdout + proc.stderr


def test_env_credentials_and_wrong_password_never_printed(basic_registry: RegistryServer) -> None:
    ref = f"{basic_registry.address}/nothing/here:1"
    secret = "definitely-wrong-pw-4711"
    proc = run("resolve", "--plain-http", ref, env={"DTBUNDLE_USERNAME": USER, "DTBUNDLE_PASSWORD": secret})
    line = assert_clean_error(proc, 1)
    assert "refused" in line and "DTBUNDLE_PASSWORD" in line and secret not in proc.stdout + proc.stderr


def test_explicit_credentials_need_one_registry() -> None:
    proc = run(
        "resolve",
        "--username",
        "u",
        "a.example/x:1",
        "b.example/y:1",
        env={"DTBUNDLE_PASSWORD": "p"},
    )
    assert "--auth-registry" in assert_clean_error(proc, 2)


class _LyingRegistry(BaseHTTPRequestHandler):
    """Serves a manifest whose Docker-Content-Digest does not match its bytes."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", oci.OCI_INDEX)
        self.send_header("Docker-Content-Digest", "sha256:" + "0" * 64)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def lying_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LyingRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_digest_mismatch_is_integrity_error(lying_registry: str) -> None:
    line = assert_clean_error(run("resolve", "--plain-http", "--no-referrers", f"{lying_registry}/x/y:1"), 3)
    assert "sha256:" + "0" * 64 in line


def test_ca_cert_option_against_tls_registry(tls_registry: RegistryServer, repo: str) -> None:
    ref = f"{tls_registry.address}/{repo}:1"
    line = assert_clean_error(run("resolve", ref), 1)
    assert "--ca-cert" in line
    line = assert_clean_error(run("resolve", "--ca-cert", str(tls_registry.ca_cert), ref), 1)
    assert "not found" in line  # TLS now trusted: the registry answered 404 for the tag
