"""``python -m dtbundle.sandbox serve``: it prints every credential it created, they work, and
SIGTERM or SIGINT stops every process it started and removes its temporary directory."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtbundle.dynatrace.deployment_api import oneagent_versions
from dtbundle.errors import AuthenticationError
from dtbundle.oci import Platform, Reference
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient
from dtbundle.registry.service import ServiceSession
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox import images
from dtbundle.sandbox.lifecycle import child_pids
from tests.support.cli import cli_env
from tests.support.registries import fast_config

READY = "Registries are up"
START_TIMEOUT = 60.0  # three registries, seeded: a few seconds, more on a loaded machine
STOP_TIMEOUT = 30.0


@dataclass
class Sandbox:
    process: subprocess.Popen[str]
    lines: list[str]
    done: threading.Event  # stdout reached its end

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def field(self, pattern: str) -> tuple[str, ...]:
        found = re.search(pattern, self.text)
        assert found, f"the sandbox did not print {pattern!r}:\n{self.text}"
        return found.groups()


def _read(process: subprocess.Popen[str], lines: list[str], done: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
    done.set()


def _launch() -> Sandbox:
    process = subprocess.Popen(
        [sys.executable, "-m", "dtbundle.sandbox", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    box = Sandbox(process, [], threading.Event())
    threading.Thread(target=_read, args=(process, box.lines, box.done), daemon=True).start()
    return box


def _wait_for(box: Sandbox, text: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while text not in box.text:
        if box.done.is_set() or time.monotonic() > deadline:
            pytest.fail(f"the sandbox did not print {text!r} (within {timeout} s):\n{box.text}")
        time.sleep(0.05)


def _terminate(box: Sandbox) -> None:
    """After a failed test: do not leave it running."""
    if box.process.poll() is None:
        box.process.send_signal(signal.SIGTERM)
        try:
            box.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            box.process.kill()
            box.process.wait()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = _launch()
    try:
        _wait_for(box, READY)
        yield box
    finally:
        _terminate(box)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running, or a zombie nobody reaped: either way, left behind."""
    return Path(f"/proc/{pid}").exists()


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def _stop_and_check(box: Sandbox, signum: signal.Signals) -> None:
    ports = sorted({int(p) for p in re.findall(r"https?://127\.0\.0\.1:(\d+)", box.text)})
    (workdir,) = box.field(r"removed on exit\): (\S+)")
    children = child_pids(box.process.pid)
    assert len(ports) >= 5 and all(_accepts_connections(p) for p in ports)  # 3 registries, token service, API
    assert len(children) >= 3 and Path(workdir).is_dir()  # the three docker-registry processes

    box.process.send_signal(signum)
    try:
        status = box.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        left = {pid: _command(pid) for pid in child_pids(box.process.pid)}
        pytest.fail(f"the sandbox did not stop within {STOP_TIMEOUT} s (children: {left}):\n{box.text}")
    assert box.done.wait(STOP_TIMEOUT)
    assert status == 0, box.text
    assert "Traceback" not in box.text
    assert f"removed {workdir}" in box.text
    deadline = time.monotonic() + 5  # the kernel closes listening sockets with their process
    while any(_accepts_connections(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in ports if _accepts_connections(p)] == []
    assert [pid for pid in children if _alive(pid)] == []
    assert not Path(workdir).exists()


def test_serve_prints_working_credentials_and_sigterm_cleans_up(sandbox: Sandbox) -> None:
    target, user, password = sandbox.field(r"target (127\.0\.0\.1:\d+): user (\S+)  password (\S+)")
    (ca,) = sandbox.field(r"target \(private-like, TLS \+ Basic auth\): https://\S+  CA (\S+)")
    source, source_user, source_password = sandbox.field(r"source (127\.0\.0\.1:\d+): user (\S+)  password (\S+)")
    builtin, environment, paas_token = sandbox.field(r"built-in (127\.0\.0\.1:\d+): user (\S+)  PaaS token (\S+)")
    api_url, api_token = sandbox.field(r"Deployment API (http://\S+): API token (\S+)")
    cosign_key, cosign_pub = sandbox.field(r"vendor cosign key: (\S+) \(private, PKCS#8 PEM\)  (\S+) \(public\)")
    assert Path(cosign_key).stat().st_mode & 0o077 == 0 and Path(cosign_pub).is_file()

    built = images.build_image(Platform("linux", "amd64"), [images.make_layer("sandbox-test", 128)])

    def client(address: str, who: str, secret: str, **config: object) -> RegistryClient:
        creds = CredentialResolver({address: Credentials("printed", who, secret)}, use_config_files=False)
        return RegistryClient(fast_config(**config), creds)

    # The printed target credentials push (TLS with the printed CA); a wrong password is refused.
    pushed = Reference(target, "check/login", "1.0")
    with client(target, user, password, ca_cert=Path(ca)) as registry:
        images.push(registry, pushed, built)
        assert registry.get_manifest(pushed).digest == built.digest
    with client(target, user, "not-the-password", ca_cert=Path(ca)) as registry, pytest.raises(AuthenticationError):
        registry.get_manifest(pushed)
    # The source's admin pushes (through the token service); the PaaS token pulls from the built-in registry.
    with client(source, source_user, source_password, plain_http=True) as registry:
        images.push(registry, Reference(source, "samples/check", "1.0"), built)
    with client(builtin, environment, paas_token, plain_http=True) as registry:
        major, minor, revision = dtsandbox.SAMPLE_VERSIONS["oneagent"].split(".")[:3]
        registry.get_manifest(Reference(builtin, "linux/oneagent", f"{major}.{minor}.{revision}-raw"))
    with ServiceSession(fast_config()) as session:
        assert oneagent_versions(api_url, api_token, session).versions

    _stop_and_check(sandbox, signal.SIGTERM)


def test_sigint_cleans_up_too(sandbox: Sandbox) -> None:
    _stop_and_check(sandbox, signal.SIGINT)


def test_a_signal_during_startup_leaves_nothing_behind() -> None:
    box = _launch()
    try:
        _wait_for(box, "Starting sample registries")
        (workdir,) = box.field(r"Starting sample registries .* in (\S+) \.\.\.")
        deadline = time.monotonic() + START_TIMEOUT
        while not (children := child_pids(box.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)  # a registry is starting: the sandbox is half made
        box.process.send_signal(signal.SIGTERM)
        status = box.process.wait(STOP_TIMEOUT)
    finally:
        _terminate(box)
    assert box.done.wait(STOP_TIMEOUT)
    assert status == 128 + signal.SIGTERM or READY in box.text, box.text  # interrupted (rarely: just ready)
    assert children and [pid for pid in children if _alive(pid)] == []
    assert not Path(workdir).exists() and "Traceback" not in box.text
