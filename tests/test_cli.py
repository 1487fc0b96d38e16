"""The installed CLI as a user runs it: verbs listed, exit codes, one-line errors, no
tracebacks (unless --debug), and no secret in any output.

Help, version and usage errors run the console entry point in-process (``run_in_process``);
registry work, a piped password and the installed entry points run in a subprocess (``run``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dtbundle import __version__, oci
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.cli import assert_clean_error, cli_env, record_backoff, run, run_in_process
from tests.support.registries import PASSWORD, USER, sample


def test_installed_console_script_runs() -> None:
    # The console script pip installed, as a process of its own (``python -m dtbundle`` runs in
    # every ``run`` below); the in-process tests call the same entry point, dtbundle.cli.main.
    script = Path(sys.executable).with_name("dtbundle")
    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False, env=cli_env()
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"dtbundle {__version__}", proc.stderr


def test_help_lists_every_verb() -> None:
    proc = run_in_process("--help")
    assert proc.returncode == 0
    for verb in ("resolve", "keygen", "export", "verify", "inspect", "import"):
        assert f" {verb} " in proc.stdout


def test_version() -> None:
    proc = run_in_process("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"dtbundle {__version__}"


def test_resolve_text_and_json(plain_registry: RegistryServer, seeded: list[images.SampleImage]) -> None:
    operator = sample(seeded, "operator")
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
    line = assert_clean_error(run_in_process("resolve", "Bad//Ref"), 2)
    assert "Bad//Ref" in line


def test_unreachable_registry_is_operational_error(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = record_backoff(monkeypatch)  # in-process, so the retries need not wait for real
    line = assert_clean_error(run_in_process("resolve", "--plain-http", "127.0.0.1:9/x:1"), 1)
    assert "127.0.0.1:9" in line
    assert sleeps, "connection failures are retried with backoff"


def test_debug_shows_the_traceback() -> None:
    proc = run_in_process("--debug", "resolve", "Bad//Ref")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    # --debug lasts one run: the next one (a new process for a user) is clean again.
    assert "Traceback" not in run_in_process("resolve", "Bad//Ref").stderr


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
    # Authenticated: the error is 'does not exist' (a usage error naming what is there), not 'refused'.
    line = assert_clean_error(proc, 2)
    assert "does not exist" in line and PASSWORD not in proc.stdout + proc.stderr


def test_env_credentials_and_wrong_password_never_printed(basic_registry: RegistryServer) -> None:
    ref = f"{basic_registry.address}/nothing/here:1"
    secret = "definitely-wrong-pw-4711"
    proc = run("resolve", "--plain-http", ref, env={"DTBUNDLE_USERNAME": USER, "DTBUNDLE_PASSWORD": secret})
    line = assert_clean_error(proc, 1)
    assert "refused" in line and "DTBUNDLE_PASSWORD" in line and secret not in proc.stdout + proc.stderr


def test_explicit_credentials_need_one_registry() -> None:
    proc = run_in_process(
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
    # A short poll interval: shutdown() waits for serve_forever to notice, 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
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
    line = assert_clean_error(run("resolve", "--ca-cert", str(tls_registry.ca_cert), ref), 2)
    assert "does not exist" in line  # TLS now trusted: the registry answered 404 for the tag
