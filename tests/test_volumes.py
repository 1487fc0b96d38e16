"""Volumes (issue 14): ``export --volume-size`` writes a set of complete, signed bundles, each within
the size; ``import`` and ``verify`` take any of them, in any order, one run or many, and publish a tag
only once everything it needs is at the target."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.key import load_private_key, load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.errors import UsageError, VolumeSetError
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.export.volumes import partition, volume_paths
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.oci import Platform, referrers_tag
from dtbundle.oci.reference import Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from dtbundle.verify import verify
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import Exported, make_client

VOLUME = 2 << 20  # 2 MiB: the eight 600 KB layers need four or five volumes
LAYER = 600_000


@pytest.fixture(scope="module")
def big_image(plain_registry: RegistryServer, signing_key: ec.EllipticCurvePrivateKey) -> tuple[Reference, str]:
    """An image of eight incompressible layers, signed with cosign (its signature is in every volume)."""
    layers = [gzip.compress(random.Random(n).randbytes(LAYER), compresslevel=1, mtime=0) for n in range(8)]
    built = images.build_image(Platform("linux", "amd64"), layers)
    ref = Reference(plain_registry.address, f"vol/{uuid.uuid4().hex[:8]}/app", "1.0")
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, built)
        sig = images.cosign_signature(f"{ref.registry}/{ref.repository}", built.digest, signing_key)
        images.push(client, ref.with_tag(referrers_tag(built.digest) + ".sig"), sig)
    return ref, built.digest


@pytest.fixture(scope="module")
def volume_set(
    tmp_path_factory: pytest.TempPathFactory,
    plain_registry: RegistryServer,
    big_image: tuple[Reference, str],
    keys_dir: Path,
) -> list[Path]:
    out = tmp_path_factory.mktemp("volumes") / "dt.tar.zst"
    settings = ExportSettings(
        requests=tuple(requests_from([str(big_image[0])])),
        output=out,
        signing_key=load_private_key(keys_dir / "dtbundle.key"),
        volume_size=VOLUME,
    )
    with make_client(plain_registry, user=None) as client:
        summary = run_export(client, settings)
    assert [w.path for w in summary.written] == volume_paths(out, len(summary.written))
    return [w.path for w in summary.written]


def test_every_volume_is_a_complete_signed_bundle_within_the_size(volume_set: list[Path], keys_dir: Path) -> None:
    assert len(volume_set) >= 3
    keys = [load_public_key(keys_dir / "dtbundle.pub")]
    carried: list[str] = []
    for number, path in enumerate(volume_set, 1):
        assert path.stat().st_size <= VOLUME
        assert path.with_name(path.name + ".sha256").read_text().split()[0]
        result = verify(path, keys, None)  # alone: its own signature, its own files
        assert result.volumes == (number,) and number not in result.missing
        with open_bundle(path, keys) as bundle:
            catalog = bundle.catalog
            assert catalog.volume is not None and (catalog.volume.number, catalog.volume.count) == (
                number,
                len(volume_set),
            )
            carried += [f.digest for f in catalog.own_files if f.volume == number]
    assert len(carried) == len(set(carried))  # a blob is in one volume only
    everything = verify(list(reversed(volume_set)), keys, None)
    assert everything.missing == () and everything.volumes == tuple(range(1, len(volume_set) + 1))


def test_volumes_imported_one_at_a_time_in_any_order_tag_only_after_the_last(
    plain_registry: RegistryServer,
    big_image: tuple[Reference, str],
    volume_set: list[Path],
    keys_dir: Path,
    skopeo: str,
) -> None:
    ref, digest = big_image
    where = f"{plain_registry.address}/imp-{uuid.uuid4().hex[:8]}"
    target = Reference(plain_registry.address, f"{where.split('/', 1)[1]}/{ref.repository}", ref.tag)
    order = list(volume_set)
    random.Random(14).shuffle(order)
    keys = [load_public_key(keys_dir / "dtbundle.pub")]
    with make_client(plain_registry, user=None) as client:
        for n, path in enumerate(order, 1):
            report = run_import(client, ImportSettings(path, keys, RepositoryMapper(where)))
            assert report.volumes is not None
            if n < len(order):
                assert client.head_manifest(target) is None, f"tagged after {n} of {len(order)} volumes"
                assert len(report.volumes.missing) == len(order) - n and report.waiting
            else:
                assert report.volumes.missing == () and not report.waiting
        there = client.head_manifest(target)
        assert there is not None and there.digest == digest
        assert client.head_manifest(target.with_tag(referrers_tag(digest) + ".sig")) is not None
    inspected = subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", f"docker://{target}"], capture_output=True, text=True, timeout=60
    )
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["Digest"] == digest, inspected.stderr


def test_volumes_given_together_import_in_one_run(
    plain_registry: RegistryServer, big_image: tuple[Reference, str], volume_set: list[Path], keys_dir: Path
) -> None:
    where = f"{plain_registry.address}/all-{uuid.uuid4().hex[:8]}"
    args = [str(p) for p in reversed(volume_set)]
    proc = run_in_process(
        "import", "--plain-http", "--public-key", str(keys_dir / "dtbundle.pub"), "--registry", where, *args
    )
    assert proc.returncode == 0, proc.stderr
    assert "no volume of the set is missing" in proc.stdout
    ref, digest = big_image
    with make_client(plain_registry, user=None) as client:
        there = client.head_manifest(
            Reference(plain_registry.address, f"{where.split('/', 1)[1]}/{ref.repository}", "1.0")
        )
    assert there is not None and there.digest == digest


def test_volumes_of_two_sets_or_one_twice_are_refused(
    volume_set: list[Path], exported: Exported, keys_dir: Path
) -> None:
    pub = str(keys_dir / "dtbundle.pub")
    twice = run_in_process("verify", "--public-key", pub, str(volume_set[0]), str(volume_set[0]))
    assert "both volume 1" in assert_clean_error(twice, 2)
    mixed = run_in_process("verify", "--public-key", pub, str(volume_set[0]), str(exported.path))
    assert "not a volume" in assert_clean_error(mixed, 2)
    with pytest.raises(VolumeSetError):
        verify([exported.path, exported.path], [load_public_key(exported.pub)], None)


def test_partition_never_splits_and_refuses_what_cannot_fit() -> None:
    blobs = [(f"sha256:{n:064x}", 700_000) for n in range(6)]
    plan = partition(blobs, head_tar=20_000, volume_size=VOLUME)
    per_volume = [sum(1 for v in plan.volume_of.values() if v == n) for n in range(1, plan.count + 1)]
    assert plan.count == 3 and per_volume == [2, 2, 2]
    with pytest.raises(UsageError, match="larger than what a volume"):
        partition([("sha256:" + "a" * 64, 3 << 20)], head_tar=20_000, volume_size=VOLUME)
    with pytest.raises(UsageError, match="leaves no room"):
        partition(blobs, head_tar=VOLUME, volume_size=VOLUME)


def test_volume_names() -> None:
    assert [p.name for p in volume_paths(Path("/x/dt.tar.zst"), 2)] == ["dt.001.tar.zst", "dt.002.tar.zst"]
    assert volume_paths(Path("b.bundle"), 1)[0].name == "b.001.bundle"
    assert volume_paths(Path("plain"), 1000)[999].name == "plain.1000"
