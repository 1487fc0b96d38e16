"""Volumes (issue 14): ``export --volume-size`` writes a set of complete, signed bundles, each within
the size; ``import`` and ``verify`` take any of them, in any order, one run or many, and publish a tag
only once everything it needs is at the target."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.bundle.codec import Context, path_check
from dtbundle.bundle.format import parse_catalog
from dtbundle.bundle.key import load_private_key, load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.errors import CatalogError, LocalIOError, UsageError, VolumeSetError
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.export.volumes import part_path, partition, volume_paths
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.limits import BundleLimits
from dtbundle.oci import Platform, referrers_tag
from dtbundle.oci.reference import Reference
from dtbundle.progress import parse_size
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
                signature = target.with_tag(referrers_tag(digest) + ".sig")  # complete, but waits for its image
                assert client.head_manifest(signature) is None, f"signature tagged after {n} volumes"
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


def test_partition_splits_only_a_blob_larger_than_a_volume() -> None:
    blobs = [(f"sha256:{n:064x}", 700_000) for n in range(6)]
    plan = partition(blobs, head_tar=20_000, volume_size=VOLUME)
    per_volume = [sum(1 for v in plan.volume_of.values() if v == n) for n in range(1, plan.count + 1)]
    assert plan.count == 3 and per_volume == [2, 2, 2] and plan.parts == {}
    large = "sha256:" + "a" * 64
    split = partition([*blobs[:1], (large, 5 << 20)], head_tar=20_000, volume_size=VOLUME)
    pieces = split.parts[large]
    assert sum(size for _, size in pieces) == 5 << 20 and [v for v, _ in pieces] == [1, 2, 3]
    assert split.volume_of == {blobs[0][0]: 1}  # the whole blob first; the parts fill the rest of its volume
    assert all(size % 512 == 0 for _, size in pieces[:-1])
    with pytest.raises(UsageError, match="leaves no room"):
        partition(blobs, head_tar=VOLUME, volume_size=VOLUME)


@pytest.fixture(scope="module")
def split_set(
    tmp_path_factory: pytest.TempPathFactory, plain_registry: RegistryServer, keys_dir: Path
) -> tuple[Reference, images.BuiltManifest, list[Path]]:
    """An image with a 5 MB layer, exported in 2 MiB volumes: the layer travels in parts."""
    layers = [gzip.compress(random.Random(99).randbytes(5_000_000), compresslevel=1, mtime=0), layer_of(98)]
    built = images.build_image(Platform("linux", "amd64"), layers)
    ref = Reference(plain_registry.address, f"vol/{uuid.uuid4().hex[:8]}/big", "2.0")
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, built)
    out = tmp_path_factory.mktemp("split") / "big.tar.zst"
    proc = run_in_process("export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(out),
                          "--volume-size", "2MiB", "--json", str(ref))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return ref, built, [Path(w["bundle"]) for w in json.loads(proc.stdout)["written"]]


def test_a_blob_larger_than_a_volume_travels_in_parts_imported_days_apart(
    plain_registry: RegistryServer, split_set: tuple[Reference, images.BuiltManifest, list[Path]], keys_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Each part in its own volume, verified alone; import keeps parts in --parts-dir between runs and
    pushes the blob (its digest checked) once the last part arrived, then removes them."""
    ref, built, paths = split_set
    pub = str(keys_dir / "dtbundle.pub")
    assert len(paths) >= 3 and all(p.stat().st_size <= VOLUME for p in paths)
    with open_bundle(paths[0], [load_public_key(keys_dir / "dtbundle.pub")]) as bundle:
        (split,) = bundle.catalog.split
        assert split.digest == built.blobs[1].descriptor.digest and split.parts >= 3
    assert run_in_process("verify", "--public-key", pub, *map(str, paths)).returncode == 0
    where = f"{plain_registry.address}/parts-{uuid.uuid4().hex[:8]}"
    target = Reference(plain_registry.address, f"{where.split('/', 1)[1]}/{ref.repository}", "2.0")
    parts_dir = tmp_path / "parts"
    order = list(reversed(paths))
    with make_client(plain_registry, user=None) as client:
        for n, path in enumerate(order, 1):
            proc = run_in_process("import", "--plain-http", "--public-key", pub, "--registry", where,
                                  "--parts-dir", str(parts_dir), str(path))  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            there = client.head_manifest(target)
            assert (there is None) == (n < len(order)), f"after {n} of {len(order)} volumes"
        assert there is not None and there.digest == built.digest
        assert client.blob_size(target, split.digest) == split.size
    assert not any(parts_dir.rglob("*.0*")), "the parts were removed once the blob was pushed"


def test_a_damaged_kept_part_no_longer_counts(
    plain_registry: RegistryServer, split_set: tuple[Reference, images.BuiltManifest, list[Path]], keys_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A kept part is hashed again before it counts: a damaged one makes its volume missing again (a dry
    run sees kept parts too), and importing that volume again completes the set."""
    paths = split_set[2]
    keys = [load_public_key(keys_dir / "dtbundle.pub")]
    where = RepositoryMapper(f"{plain_registry.address}/dmg-{uuid.uuid4().hex[:8]}")
    parts_dir = tmp_path / "parts"
    last = paths[-1]
    with make_client(plain_registry, user=None) as client:
        run_import(client, ImportSettings(last, keys, where, parts_dir=parts_dir))
        (kept,) = [p for p in parts_dir.rglob("*.0*") if p.is_file()]
        dry = run_import(client, ImportSettings(paths[0], keys, where, parts_dir=parts_dir, dry_run=True,
                                                volumes=tuple(paths[1:-1])))  # fmt: skip
        assert dry.volumes is not None and dry.volumes.missing == ()  # the kept part counts
        kept.write_bytes(b"\x00" + kept.read_bytes()[1:])
        rest = run_import(client, ImportSettings(paths[0], keys, where, parts_dir=parts_dir,
                                                 volumes=tuple(paths[1:-1])))  # fmt: skip
        assert rest.volumes is not None and rest.volumes.missing == (len(paths),) and rest.waiting
        done = run_import(client, ImportSettings(last, keys, where, parts_dir=parts_dir))
        assert done.volumes is not None and done.volumes.missing == () and not done.waiting
        # A volume imported again once the target holds the blob keeps nothing.
        again = run_import(client, ImportSettings(paths[1], keys, where, parts_dir=parts_dir))
        assert again.volumes is not None and again.volumes.missing == ()
    assert not any(p.is_file() for p in parts_dir.rglob("*"))


def test_the_split_records_of_a_catalog_are_checked(
    split_set: tuple[Reference, images.BuiltManifest, list[Path]], keys_dir: Path
) -> None:
    with open_bundle(split_set[2][0], [load_public_key(keys_dir / "dtbundle.pub")]) as bundle:
        good = json.loads(bundle.catalog_bytes)
    limits = BundleLimits()
    parse_catalog(json.dumps(good).encode(), limits)
    twice = json.loads(json.dumps(good))
    twice["split"] *= 2
    whole_too = json.loads(json.dumps(good))
    digest = good["split"][0]["digest"]
    whole_too["files"].append({"path": f"blobs/sha256/{digest[7:]}", "size": 1, "sha256": digest[7:]})
    whole_too["totalSize"] += 1
    many = json.loads(json.dumps(good))
    many["split"][0]["parts"] = 999_999
    for broken in (twice, whole_too, many):
        with pytest.raises(CatalogError):
            parse_catalog(json.dumps(broken).encode(), limits)


def layer_of(seed: int, size: int = 300_000) -> bytes:
    return gzip.compress(random.Random(seed).randbytes(size), compresslevel=1, mtime=0)


def test_volume_names() -> None:
    assert [p.name for p in volume_paths(Path("/x/dt.tar.zst"), 2)] == ["dt.001.tar.zst", "dt.002.tar.zst"]
    assert volume_paths(Path("b.bundle"), 1)[0].name == "b.001.bundle"
    assert volume_paths(Path("plain"), 1000)[999].name == "plain.1000"


def test_the_catalog_of_a_volume_is_checked_for_consistency(volume_set: list[Path], keys_dir: Path) -> None:
    """Volume numbers, parts and the format version are validated where the catalog is parsed."""
    with open_bundle(volume_set[0], [load_public_key(keys_dir / "dtbundle.pub")]) as bundle:
        good = json.loads(bundle.catalog_bytes)
    own = next(n for n, f in enumerate(good["files"]) if f.get("volume"))

    def broken(change: Callable[[dict[str, Any]], None]) -> bytes:
        document = json.loads(json.dumps(good))
        change(document)
        return json.dumps(document).encode()

    cases: list[Callable[[dict[str, Any]], None]] = [
        lambda c: c.update(formatVersion=1),  # an older reader would ignore the volume: refused
        lambda c: c["volume"].update(number=c["volume"]["count"] + 1),
        lambda c: c["files"][own].update(volume=c["volume"]["count"] + 1),
        lambda c: c["files"][1].update(volume=1),  # index.json must be in every volume
        lambda c: c.pop("volume"),  # volume numbers without a set
        lambda c: c.update(required=[{"digest": "sha256:" + c["files"][own]["sha256"], "size": 1}]),  # also carried
        lambda c: c.update(split=[{"digest": "sha256:" + "b" * 64, "size": 1, "parts": 1}]),  # parts missing
    ]
    limits = BundleLimits()
    parse_catalog(broken(lambda c: None), limits)
    for change in cases:
        with pytest.raises(CatalogError):
            parse_catalog(broken(change), limits)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GiB", 4 << 30),
        ("4G", 4 << 30),
        ("4.7GB", 4_700_000_000),
        ("700MiB", 700 << 20),
        ("64k", 65536),
        ("4096", 4096),
    ],
)
def test_volume_sizes_take_iec_and_si_units(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_volume_that_comes_out_larger_than_the_size_is_refused(
    plain_registry: RegistryServer, big_image: tuple[Reference, str], keys_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """If the size estimate were ever wrong, export fails rather than write a volume the medium cannot hold."""
    monkeypatch.setattr("dtbundle.export.volumes.room_of", lambda head, size: 8 * size)
    settings = ExportSettings(
        requests=tuple(requests_from([str(big_image[0])])),
        output=tmp_path / "v.tar.zst",
        signing_key=load_private_key(keys_dir / "dtbundle.key"),
        volume_size=VOLUME,
    )
    with make_client(plain_registry, user=None) as client, pytest.raises(LocalIOError, match="above --volume-size"):
        run_export(client, settings)
    assert list(tmp_path.iterdir()) == []  # no volume of the set was left behind


def test_part_names_past_999_stay_readable() -> None:
    digest = "sha256:" + "c" * 64
    assert path_check(part_path(digest, 1234), "files[0].path", Context(BundleLimits())) == f"parts/{'c' * 64}.1234"
    plan = partition([(digest, 5 << 30)], head_tar=20_000, volume_size=VOLUME)
    assert len(plan.parts[digest]) > 1000  # 5 GB in 2 MiB volumes


def test_force_replaces_a_longer_set_and_its_later_volumes(
    plain_registry: RegistryServer, big_image: tuple[Reference, str], keys_dir: Path, tmp_path: Path
) -> None:
    key = str(keys_dir / "dtbundle.key")
    out = tmp_path / "dt.tar.zst"
    base = ("export", "--plain-http", "--signing-key", key, "-o", str(out), "-q", str(big_image[0]))
    assert run_in_process(*base, "--volume-size", "2MiB").returncode == 0
    before = sorted(p.name for p in tmp_path.glob("dt.*.tar.zst"))
    assert len(before) >= 3
    assert "--force" in assert_clean_error(run_in_process(*base, "--volume-size", "4MiB"), 2)
    assert run_in_process(*base, "--volume-size", "4MiB", "--force").returncode == 0
    after = sorted(p.name for p in tmp_path.glob("dt.*"))
    volumes = [n for n in after if n.endswith(".tar.zst")]
    assert len(volumes) < len(before) and after == sorted([*volumes, *(v + ".sha256" for v in volumes)])
    pub = str(keys_dir / "dtbundle.pub")
    assert run_in_process("verify", "--public-key", pub, *(str(tmp_path / v) for v in volumes)).returncode == 0


def test_the_free_space_check_counts_what_every_volume_repeats_once_per_volume(
    plain_registry: RegistryServer, big_image: tuple[Reference, str], keys_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(
        "dtbundle.export.write.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 1 << 10)
    )
    proc = run_in_process("export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), "-o",
                          str(tmp_path / "v.tar.zst"), "--volume-size", "2MiB", str(big_image[0]))  # fmt: skip
    line = assert_clean_error(proc, 1)
    needed = re.search(r"\(bundle ([0-9.]+) MiB", line)
    assert needed is not None and float(needed.group(1)) < 8, line  # 4.8 MB of layers, 3-4 volumes


def test_a_layout_import_of_some_volumes_lists_the_waiting_images(
    big_image: tuple[Reference, str], volume_set: list[Path], keys_dir: Path, tmp_path: Path
) -> None:
    keys = [load_public_key(keys_dir / "dtbundle.pub")]
    layout = tmp_path / "layout"
    first = run_import(None, ImportSettings(volume_set[0], keys, to_oci=layout))
    assert first.waiting == [str(big_image[0])] and first.volumes is not None and first.volumes.missing
    assert big_image[1] not in (layout / "index.json").read_text()
    rest = run_import(None, ImportSettings(volume_set[1], keys, to_oci=layout, volumes=tuple(volume_set[2:])))
    assert rest.waiting == [] and rest.volumes is not None and rest.volumes.missing == ()
    assert big_image[1] in (layout / "index.json").read_text()


def test_force_leaves_files_that_only_look_like_later_volumes(
    plain_registry: RegistryServer, big_image: tuple[Reference, str], volume_set: list[Path], keys_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """--force removes the volumes of an earlier set of the name, in any width; a file that only looks
    like one stays, and without --force an earlier volume is a reason to refuse."""
    dated = tmp_path / "dt.2025.tar.zst"
    dated.write_bytes(b"not a volume")
    wide = tmp_path / "dt.0001.tar.zst"  # volume 1 of an earlier set, numbered in another width
    shutil.copy(volume_set[0], wide)
    out = str(tmp_path / "dt.tar.zst")
    base = ("export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", out, "-q",
            "--volume-size", "4MiB", str(big_image[0]))  # fmt: skip
    assert "dt.0001.tar.zst" in assert_clean_error(run_in_process(*base), 2)
    proc = run_in_process(*base, "--force")
    assert proc.returncode == 0, proc.stderr
    assert dated.read_bytes() == b"not a volume" and not wide.exists()


def test_a_failed_layout_commit_keeps_the_parts(
    split_set: tuple[Reference, images.BuiltManifest, list[Path]], keys_dir: Path, tmp_path: Path
) -> None:
    """Parts go only once the joined blob is committed: a layout import refused at commit keeps them."""
    ref, built, paths = split_set
    keys = [load_public_key(keys_dir / "dtbundle.pub")]
    layout, parts_dir = tmp_path / "layout", tmp_path / "parts"
    run_import(None, ImportSettings(paths[0], keys, to_oci=layout, parts_dir=parts_dir, volumes=tuple(paths[1:-1])))
    kept = sorted(p.name for p in parts_dir.rglob("*.0*"))
    assert kept
    index = json.loads((layout / "index.json").read_text())
    taken = {"mediaType": built.media_type, "digest": "sha256:" + "e" * 64, "size": 1,
             "annotations": {"org.opencontainers.image.ref.name": str(ref)}}  # fmt: skip
    (layout / "index.json").write_text(json.dumps({**index, "manifests": [*index["manifests"], taken]}))
    with pytest.raises(UsageError):  # the ref name is taken: refused at commit, without --overwrite
        run_import(None, ImportSettings(paths[-1], keys, to_oci=layout, parts_dir=parts_dir))
    assert set(kept) < {p.name for p in parts_dir.rglob("*.0*")}  # kept, and the new part too
    done = run_import(None, ImportSettings(paths[-1], keys, to_oci=layout, parts_dir=parts_dir, overwrite=True))
    assert done.volumes is not None and done.volumes.missing == () and not list(parts_dir.rglob("*.0*"))


def test_a_killed_import_leaves_no_partial_part_behind(
    plain_registry: RegistryServer, split_set: tuple[Reference, images.BuiltManifest, list[Path]], keys_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    keys = [load_public_key(keys_dir / "dtbundle.pub")]
    with open_bundle(split_set[2][0], keys) as bundle:
        assert bundle.catalog.volume is not None
        directory = tmp_path / "parts" / bundle.catalog.volume.set
    directory.mkdir(parents=True)
    stale = directory / ".part.dead.partial"  # what a killed import was writing (no process holds its lock)
    stale.write_bytes(b"x" * 100)
    where = RepositoryMapper(f"{plain_registry.address}/stale-{uuid.uuid4().hex[:8]}")
    with make_client(plain_registry, user=None) as client:
        run_import(client, ImportSettings(split_set[2][-1], keys, where, parts_dir=tmp_path / "parts"))
    assert not stale.exists()


def test_a_platform_signature_waits_for_its_image(
    plain_registry: RegistryServer, signing_key: ec.EllipticCurvePrivateKey, keys_dir: Path, tmp_path: Path
) -> None:
    """A platform manifest complete before its index is pushed by digest, but its signature tag waits
    for the image: no tag of the image appears before the last volume it needs."""
    platforms = [
        images.build_image(Platform("linux", arch), [layer_of(seed + n, 600_000) for n in range(3)], label=arch)
        for seed, arch in ((10, "amd64"), (20, "arm64"))
    ]
    index = images.build_index(platforms)
    ref = Reference(plain_registry.address, f"vol/{uuid.uuid4().hex[:8]}/multi", "3.0")
    first_sig = ref.with_tag(referrers_tag(platforms[0].digest) + ".sig")
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, index)
        for subject in (index.digest, platforms[0].digest):
            signature = images.cosign_signature(f"{ref.registry}/{ref.repository}", subject, signing_key)
            images.push(client, ref.with_tag(referrers_tag(subject) + ".sig"), signature)
    out = tmp_path / "multi.tar.zst"
    settings = ExportSettings(
        requests=tuple(requests_from([str(ref)])),
        output=out,
        signing_key=load_private_key(keys_dir / "dtbundle.key"),
        volume_size=VOLUME,
    )
    with make_client(plain_registry, user=None) as client:
        paths = [w.path for w in run_export(client, settings).written]
        assert len(paths) >= 2
        keys = [load_public_key(keys_dir / "dtbundle.pub")]
        where = f"{plain_registry.address}/plat-{uuid.uuid4().hex[:8]}"
        target = Reference(plain_registry.address, f"{where.split('/', 1)[1]}/{ref.repository}", "3.0")
        waiting_sig = target.with_tag(first_sig.tag)
        run_import(client, ImportSettings(paths[0], keys, RepositoryMapper(where), volumes=tuple(paths[1:-1])))
        assert client.head_manifest(target.with_digest(platforms[0].digest).with_tag(None)) is not None
        assert client.head_manifest(waiting_sig) is None and client.head_manifest(target) is None
        run_import(client, ImportSettings(paths[-1], keys, RepositoryMapper(where)))
        assert client.head_manifest(waiting_sig) is not None and client.head_manifest(target) is not None
    # Tagged as an image of its own (an arch tag), the platform is published with its signature at once.
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref.with_tag("3.0-amd64"), platforms[0])
        both = tuple(requests_from([str(ref), str(ref.with_tag("3.0-amd64"))]))
        settings = dataclasses.replace(settings, requests=both, output=tmp_path / "tagged.tar.zst")
        paths = [w.path for w in run_export(client, settings).written]
        where = f"{plain_registry.address}/arch-{uuid.uuid4().hex[:8]}"
        arch = Reference(plain_registry.address, f"{where.split('/', 1)[1]}/{ref.repository}", "3.0-amd64")
        run_import(client, ImportSettings(paths[0], keys, RepositoryMapper(where), volumes=tuple(paths[1:-1])))
        assert client.head_manifest(arch) is not None and client.head_manifest(arch.with_tag(first_sig.tag)) is not None
        assert client.head_manifest(arch.with_tag("3.0")) is None
