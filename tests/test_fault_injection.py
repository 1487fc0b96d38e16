"""Export and import through a fault-injecting proxy in front of a real registry (issue 12).

Connection resets mid-blob, stalls, truncated bodies, 5xx and 429 with Retry-After
(``tests/support/faults.py``): with a transient fault each command completes and carries
exactly the same bytes as without it; with a persistent one it fails with exit 1 and one
clean line once its retries are exhausted, and leaves nothing behind (no bundle, no tag).
Runs are in-process with backoff recorded instead of slept; the stall bound is a fraction
of a second (``--stall-timeout``), so stalls cost little time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtbundle.errors import NotFoundError
from dtbundle.oci.reference import Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import read_entries
from tests.support.cli import assert_clean_error, record_backoff, run_in_process
from tests.support.faults import Fault, FaultProxy
from tests.support.registries import make_client, sample

STALL = ("--stall-timeout", "0.25")


@pytest.fixture
def proxy(plain_registry: RegistryServer) -> Iterator[FaultProxy]:
    server = FaultProxy(plain_registry.address)
    yield server
    server.stop()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    return record_backoff(monkeypatch)


def through(proxy: FaultProxy, image: images.SampleImage) -> str:
    """The image's reference with the proxy in place of the registry."""
    return f"{proxy.address}/{image.ref.repository}:{image.ref.tag}"


def export(keys_dir: Path, out: Path, ref: str) -> list[str]:
    return ["export", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(out), "--plain-http", *STALL, ref]


def content(bundle: Path) -> dict[str, bytes]:
    """The bundle's content files (blobs and manifests by digest), without the catalog that names the source."""
    return {name: data for name, data in read_entries(bundle) if name.startswith("blobs/")}


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory, plain_registry: RegistryServer, seeded: list[images.SampleImage]
) -> Path:
    """The collector (an index of two platforms), exported without faults: the reference bundle."""
    keys = tmp_path_factory.mktemp("fault-keys")
    assert run_in_process("keygen", "--output-dir", str(keys)).returncode == 0
    out = keys / "baseline.tar.zst"
    image = sample(seeded, "collector")
    proc = run_in_process(*export(keys, out, str(image.ref)))
    assert proc.returncode == 0, proc.stderr
    return out


TRANSIENT = {
    "reset mid-blob": [Fault("reset")],
    "truncated blob": [Fault("truncate")],
    "stalled blob": [Fault("stall", seconds=1.0)],
    "truncated manifest": [Fault("truncate", path="/manifests/sha256:")],
    "503 twice": [Fault("status", status=503, times=2)],
    "429 with Retry-After": [Fault("status", path="/manifests/", status=429, retry_after="3")],
}


@pytest.mark.parametrize("faults", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_export_through_transient_faults_carries_the_same_bytes(
    faults: list[Fault],
    proxy: FaultProxy,
    seeded: list[images.SampleImage],
    baseline: Path,
    sleeps: list[float],
    tmp_path: Path,
) -> None:
    proxy.inject(*faults)
    out = tmp_path / "b.tar.zst"
    proc = run_in_process(*export(baseline.parent, out, through(proxy, sample(seeded, "collector"))))
    assert proc.returncode == 0, proc.stderr
    assert proxy.fired, "the fault was injected"
    assert content(out) == content(baseline)
    if any(f.retry_after for f in faults):
        assert 3.0 in sleeps  # Retry-After honoured


def test_export_with_a_connection_reset_every_time_fails_cleanly(
    proxy: FaultProxy, seeded: list[images.SampleImage], baseline: Path, sleeps: list[float], tmp_path: Path
) -> None:
    proxy.inject(Fault("reset", times=None))
    out = tmp_path / "b.tar.zst"
    line = assert_clean_error(run_in_process(*export(baseline.parent, out, through(proxy, sample(seeded, "tool")))), 1)
    assert "blob sha256:" in line and "failed 11 times" in line
    assert not out.exists()


def test_export_from_a_server_that_always_stalls_fails_naming_the_bound(
    proxy: FaultProxy, seeded: list[images.SampleImage], baseline: Path, sleeps: list[float], tmp_path: Path
) -> None:
    proxy.inject(Fault("stall", path="/manifests/sha256:", times=None, seconds=0.5))
    out = tmp_path / "b.tar.zst"
    image = sample(seeded, "collector")
    line = assert_clean_error(run_in_process(*export(baseline.parent, out, through(proxy, image))), 1)
    assert "stalled" in line and "--stall-timeout" in line and "manifest" in line
    assert not out.exists()


# -- import --------------------------------------------------------------------------------------------
def import_args(bundle: Path, target: str) -> list[str]:
    pub = bundle.parent / "dtbundle.pub"
    return ["import", "--public-key", str(pub), "--registry", target, "--plain-http", *STALL, str(bundle)]


def imported_digest(registry: RegistryServer, prefix: str, image: images.SampleImage) -> str | None:
    with make_client(registry, user=None) as client:
        ref = Reference(registry.address, f"{prefix}/{image.ref.repository}", image.ref.tag)
        try:
            return client.get_manifest(ref).digest
        except NotFoundError:
            return None


IMPORT_TRANSIENT = {
    "reset during a blob upload": [Fault("reset", method="PUT", path="/blobs/uploads/")],
    "503 opening an upload": [Fault("status", method="POST", path="/blobs/uploads/", status=503)],
    "429 on a manifest push": [Fault("status", method="PUT", path="/manifests/", status=429, retry_after="3")],
    "stalled answer": [Fault("stall", method="POST", path="/blobs/uploads/", seconds=1.0)],
}


@pytest.mark.parametrize("faults", IMPORT_TRANSIENT.values(), ids=IMPORT_TRANSIENT.keys())
def test_import_through_transient_faults_pushes_the_same_manifests(
    faults: list[Fault],
    proxy: FaultProxy,
    plain_registry: RegistryServer,
    seeded: list[images.SampleImage],
    baseline: Path,
    sleeps: list[float],
) -> None:
    prefix = f"t/{uuid.uuid4().hex[:10]}"
    proxy.inject(*faults)
    proc = run_in_process(*import_args(baseline, f"{proxy.address}/{prefix}"))
    assert proc.returncode == 0, proc.stderr
    assert proxy.fired, "the fault was injected"
    image = sample(seeded, "collector")
    assert imported_digest(plain_registry, prefix, image) == image.digest  # byte for byte
    if any(f.retry_after for f in faults):
        assert 3.0 in sleeps


def test_import_with_uploads_failing_every_time_fails_cleanly_and_tags_nothing(
    proxy: FaultProxy,
    plain_registry: RegistryServer,
    seeded: list[images.SampleImage],
    baseline: Path,
    sleeps: list[float],
) -> None:
    prefix = f"t/{uuid.uuid4().hex[:10]}"
    proxy.inject(Fault("reset", method="PUT", path="/blobs/uploads/", times=None))
    line = assert_clean_error(run_in_process(*import_args(baseline, f"{proxy.address}/{prefix}")), 1)
    assert "blob sha256:" in line and proxy.address in line
    assert imported_digest(plain_registry, prefix, sample(seeded, "collector")) is None
