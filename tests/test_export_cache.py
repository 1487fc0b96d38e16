"""``export --cache-dir``: verified blobs are kept content-addressed, so an export killed (even with
SIGKILL) and run again downloads only what is missing (whole blobs, and the rest of partial ones),
counted in bytes the source served; a damaged cached file is downloaded again; and an unwritable
output or cache is a clean error."""

from __future__ import annotations

import hashlib
import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from dtbundle.bundle.writer import BundleWriter
from dtbundle.export.cache import BlobStore, remove_dead_leftovers
from dtbundle.oci import Platform, Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import read_entries
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.interrupt import ThrottledProxy, Watched
from tests.support.registries import make_client

MiB = 1024 * 1024
EPOCH = {"SOURCE_DATE_EPOCH": "1790000000"}  # the same creation time: bundles comparable byte for byte
LAYERS = {"small": 1 * MiB, "medium": 2 * MiB, "large": 8 * MiB}


@pytest.fixture(scope="module")
def layered(plain_registry: RegistryServer) -> tuple[Reference, int]:
    """An image of three layers of different sizes, and the bytes of its blobs (config included)."""
    ref = Reference(plain_registry.address, f"cache/{uuid.uuid4().hex[:8]}", "1.0")
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer(n, s) for n, s in LAYERS.items()])
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, built)
    return ref, sum(len(b.data) for b in built.blobs)


def _export(key: Path, source: str, out: Path, cache: Path | None, *extra: str) -> dict[str, object]:
    args = ["export", "--plain-http", "--json", "--signing-key", str(key), "-o", str(out), *extra, source]
    proc = run_in_process(*args, *(["--cache-dir", str(cache)] if cache else []), env=EPOCH)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _cached(cache: Path) -> dict[str, int]:
    """Complete cached blobs (hex name -> size); temporary downloads start with a dot."""
    return {p.name: p.stat().st_size for p in (cache / "blobs" / "sha256").glob("[0-9a-f]*")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _content(bundle: object) -> list[tuple[str, bytes]]:
    """Every blob, in bundle order (the catalog, its signature and index.json name the source's address)."""
    return [(n, d) for n, d in read_entries(Path(str(bundle))) if n.startswith("blobs/")]


def test_a_killed_export_run_again_downloads_only_what_is_missing(
    plain_registry: RegistryServer, layered: tuple[Reference, int], keys_dir: Path, tmp_path: Path
) -> None:
    ref, blob_bytes = layered
    key, cache = keys_dir / "dtbundle.key", tmp_path / "cache"
    fresh = _export(key, str(ref), tmp_path / "fresh.tar.zst", None)  # the reference result, no cache

    with ThrottledProxy(plain_registry.address, 2 * MiB) as slow:
        source = f"{slow.address}/{ref.repository}:{ref.tag}"
        out = tmp_path / "killed.tar.zst"
        args = ("export", "--plain-http", "--signing-key", str(key), "-o", str(out), "--cache-dir", str(cache))
        killed = Watched(*args, source, env=EPOCH)
        deadline = time.monotonic() + 30
        while sum(_cached(cache).values() if cache.exists() else [0]) < 2 * MiB and time.monotonic() < deadline:
            time.sleep(0.02)
        code, _ = killed.interrupt(signal.SIGKILL)
    assert code == -signal.SIGKILL
    kept, kept_blobs = sum(_cached(cache).values()), len(_cached(cache))
    on_disk = sum(p.stat().st_size for p in (cache / "blobs" / "sha256").iterdir())  # with partial downloads
    assert 2 * MiB <= kept < blob_bytes, "kill the export while some, not all, blobs are cached"
    assert on_disk > kept, "a partial download of the killed export is kept, to be continued"

    with ThrottledProxy(plain_registry.address, 1 << 30) as counting:
        again = _export(key, f"{counting.address}/{ref.repository}:{ref.tag}", out, cache, "--force")
    # Manifests are resolved again (a tag may have moved); blob bytes only for what the cache
    # lacked: whole blobs, and the rest of the partial ones (Range).
    assert counting.served <= blob_bytes - on_disk + 256 * 1024, (counting.served, blob_bytes, on_disk)
    assert not [p for p in (cache / "blobs" / "sha256").iterdir() if p.name.startswith(".")]
    assert again["cache"] == {"blobs": kept_blobs, "blobBytes": kept, "redownloaded": 0}
    assert _content(out) == _content(fresh["bundle"]), "the resumed export carries other bytes"
    assert not list(tmp_path.glob(".killed.tar.zst.*")), "a temporary file of the killed export is left"


def test_a_warm_cache_serves_every_blob_and_a_damaged_one_is_fetched_again(
    plain_registry: RegistryServer, layered: tuple[Reference, int], keys_dir: Path, tmp_path: Path
) -> None:
    ref, blob_bytes = layered
    key, cache = keys_dir / "dtbundle.key", tmp_path / "cache"
    first = _export(key, str(ref), tmp_path / "a.tar.zst", cache)
    assert first["cache"] == {"blobs": 0, "blobBytes": 0, "redownloaded": 0}
    with ThrottledProxy(plain_registry.address, 1 << 30) as counting:
        warm = _export(key, f"{counting.address}/{ref.repository}:{ref.tag}", tmp_path / "b.tar.zst", cache)
    assert warm["cache"] == {"blobs": 4, "blobBytes": blob_bytes, "redownloaded": 0}
    assert counting.served < 64 * 1024  # manifests only
    assert _content(warm["bundle"]) == _content(first["bundle"])

    damaged = max((cache / "blobs" / "sha256").glob("[0-9a-f]*"), key=lambda p: p.stat().st_size)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))  # same size, wrong content: only hashing can tell
    mended = _export(key, str(ref), tmp_path / "c.tar.zst", cache)
    assert mended["cache"] == {"blobs": 3, "blobBytes": blob_bytes - len(data), "redownloaded": 1}
    assert mended["sha256"] == first["sha256"] and _sha256(damaged) == damaged.name  # same source address


def test_a_damaged_partial_download_is_started_again(
    layered: tuple[Reference, int], keys_dir: Path, tmp_path: Path
) -> None:
    ref, _ = layered
    key, cache = keys_dir / "dtbundle.key", tmp_path / "cache"
    first = _export(key, str(ref), tmp_path / "a.tar.zst", cache)
    largest = max((cache / "blobs" / "sha256").glob("[0-9a-f]*"), key=lambda p: p.stat().st_size)
    data = largest.read_bytes()
    largest.unlink()
    partial = largest.with_name(f".{largest.name}.partial")
    partial.write_bytes(bytes([data[0] ^ 0xFF]) + data[1 : len(data) // 2])  # a wrong first byte: not its start
    again = _export(key, str(ref), tmp_path / "b.tar.zst", cache)
    assert again["sha256"] == first["sha256"] and largest.read_bytes() == data and not partial.exists()


@pytest.mark.parametrize("option", ["--output", "--cache-dir"])
def test_an_unwritable_output_or_cache_is_a_clean_error(
    layered: tuple[Reference, int], keys_dir: Path, tmp_path: Path, option: str
) -> None:
    ref, _ = layered
    unwritable = Path("/sys/kernel")  # exists, and refuses writes even to root (tests run as root in CI)
    out = unwritable / "b.tar.zst" if option == "--output" else tmp_path / "b.tar.zst"
    extra = ["--cache-dir", str(unwritable / "cache")] if option == "--cache-dir" else []
    proc = run_in_process(
        "export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), "-o", str(out), *extra, str(ref)
    )
    line = assert_clean_error(proc, 1)
    assert str(unwritable) in line and option in line and "internal error" not in line, line
    assert list(tmp_path.iterdir()) == []


def test_only_a_dead_exports_leftovers_are_removed(tmp_path: Path) -> None:
    output = tmp_path / "b.tar.zst"
    (tmp_path / ".b.tar.zst.dead1.partial").write_bytes(b"killed")
    (tmp_path / ".b.tar.zst.dead2.spool").mkdir()
    (tmp_path / ".b.tar.zst.dead2.spool" / "sha256-x").write_bytes(b"blob")
    (tmp_path / ".other.tar.zst.x.partial").write_bytes(b"another output's")
    with BundleWriter(output, mtime=0) as live:  # a running export to the same name
        spool = BlobStore.spool_beside(output)
        assert remove_dead_leftovers(output) == 2
        left = {p.name for p in tmp_path.iterdir()}
        assert ".other.tar.zst.x.partial" in left and spool.directory.name in left
        assert len(left) == 3 and not {".b.tar.zst.dead1.partial", ".b.tar.zst.dead2.spool"} & left
        spool.close()
        live.abort()
