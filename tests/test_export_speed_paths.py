"""Export's fast paths keep the bundle's bytes: stored zstd frames for compressed layers, in-order
blobs streamed without a spool, planning with every request in flight (deterministic, each once).
Speed itself is measured by scripts/bench.py, never here."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
import zstandard

from dtbundle.bundle.key import load_private_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.bundle.writer import STORED_BLOCK, BundleWriter
from dtbundle.bundle.zstdframes import check_frames
from dtbundle.errors import DigestMismatchError, RegistryConnectionError
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.export.stream import Channel, already_compressed
from dtbundle.export.summary import ExportSummary
from dtbundle.limits import BundleLimits
from dtbundle.oci import Platform, Reference, sha256_digest
from dtbundle.registry import CredentialResolver, RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.registries import Exported, fast_config, make_client

_MAGIC = b"\x28\xb5\x2f\xfd"


def frames(data: bytes) -> list[tuple[set[int], int | None]]:
    """Each zstd frame of ``data``: the block types it holds and its Frame_Content_Size (or None)."""
    found, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == _MAGIC
        descriptor = data[pos + 4]
        fcs_flag, single = descriptor >> 6, bool(descriptor & 0x20)
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
        fcs_bytes = (1 if single else 0, 2, 4, 8)[fcs_flag]
        size = int.from_bytes(data[pos : pos + fcs_bytes], "little") if fcs_bytes else None
        pos += fcs_bytes
        kinds: set[int] = set()
        while True:
            block = int.from_bytes(data[pos : pos + 3], "little")
            kinds.add((block >> 1) & 3)
            pos += 3 + (1 if (block >> 1) & 3 == 1 else block >> 3)
            if block & 1:
                break
        pos += 4 if descriptor & 0x04 else 0
        found.append((kinds, size))
    return found


def zstd_cli(path: Path) -> bytes:
    return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True, timeout=120).stdout


def write(path: Path, contents: list[bytes], stored: bool) -> None:
    with BundleWriter(path, mtime=0) as writer:
        writer.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for n, data in enumerate(contents):
            pieces = iter([data[:1000], data[1000:300_000], data[300_000:]])
            writer.add_stream(f"blobs/sha256/{n:064x}", len(data), pieces, stored=stored)
        writer.add_bytes("index.json", b"{}" * 3000)
        writer.commit()


def test_stored_frames_hold_the_same_tar_as_compressed_ones(tmp_path: Path) -> None:
    sizes = [0, 1, 511, STORED_BLOCK - 1, STORED_BLOCK, STORED_BLOCK + 1, 2 * STORED_BLOCK, 3_000_001]
    contents = [os.urandom(size) for size in sizes]
    write(stored := tmp_path / "stored.tar.zst", contents, stored=True)
    write(plain := tmp_path / "plain.tar.zst", contents, stored=False)
    tar = zstd_cli(plain)
    assert zstd_cli(stored) == tar  # the zstd CLI reads the stream of frames
    limits = BundleLimits()
    reader = zstandard.ZstdDecompressor(max_window_size=limits.max_zstd_window_bytes)
    assert reader.stream_reader(io.BytesIO(stored.read_bytes()), read_across_frames=True).read() == tar
    raw_frames = [size for kinds, size in frames(stored.read_bytes()) if kinds == {0}]
    assert raw_frames == [s for s in sizes if s >= STORED_BLOCK]  # one stored frame per large file, sized
    with stored.open("rb") as handle:
        check_frames(handle, len(tar) // 1024 + 1024)  # the reader's block budget
    assert (
        stored.with_name("stored.tar.zst.sha256").read_text().split()[0]
        == hashlib.sha256(stored.read_bytes()).hexdigest()
    )


def test_many_small_compressed_layers_stay_within_the_readers_frame_budget(tmp_path: Path) -> None:
    """A stored frame per tiny layer would cost more frames and blocks than its bytes earn in the
    reader's budget (a bundle of a thousand 200-byte layers was refused by its own reader)."""
    contents = [os.urandom(200) for _ in range(1000)]
    write(bundle := tmp_path / "tiny.tar.zst", contents, stored=True)
    tar = zstd_cli(bundle)
    with bundle.open("rb") as handle:
        check_frames(handle, len(tar) // 1024 + 1024)  # the budget without the reader's per-file allowance


def test_compressed_layers_are_stored_and_read_back_with_their_digests(
    plain_registry: RegistryServer, keys_dir: Path, tmp_path: Path
) -> None:
    """A large gzip layer goes into a stored frame, a small one and the config are compressed."""
    ref = Reference(plain_registry.address, "stored/app", "1.0")
    large, small = images.make_layer("large", 3 * STORED_BLOCK), images.make_layer("small", 100)
    built = images.build_image(Platform("linux", "amd64"), [large, small])
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, built)
        export(client, [str(ref)], bundle := tmp_path / "b.tar.zst", keys_dir, concurrency=2)
    data = bundle.read_bytes()
    stored = [size for kinds, size in frames(data) if kinds == {0}]
    assert len(large) >= STORED_BLOCK and stored == [len(large)]  # only the large layer, once
    assert any(2 in kinds for kinds, _ in frames(data))  # catalog, manifests, config, small layer: compressed
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zstd -dc '{bundle}' | tar -x -C '{out}'", shell=True, check=True, timeout=120)  # noqa: S602
    unpacked = list((out / "blobs" / "sha256").iterdir())
    assert {sha256_digest(large), sha256_digest(small)} <= {f"sha256:{p.name}" for p in unpacked}
    for blob in unpacked:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    with open_bundle(bundle, None) as reader:
        assert reader.catalog.files


def export(client: RegistryClient, refs: list[str], out: Path, keys: Path, concurrency: int) -> ExportSummary:
    key = load_private_key(keys / "dtbundle.key")
    return run_export(client, ExportSettings(tuple(requests_from(refs)), out, key, concurrency=concurrency))


def test_in_order_blobs_are_streamed_without_a_spool(
    exported: Exported, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    refs = [str(i.ref) for i in exported.images]
    with make_client(plain_registry, user=None) as client:
        one = export(client, refs, tmp_path / "one.tar.zst", exported.key.parent, concurrency=1)
        four = export(client, refs, tmp_path / "four.tar.zst", exported.key.parent, concurrency=4)
    with open_bundle(tmp_path / "one.tar.zst", None) as reader:
        catalog = reader.catalog
    manifests = {a.digest for a in catalog.artifacts} | {i.digest for i in catalog.images}
    manifests |= {p.digest for i in catalog.images for p in i.platforms}
    content = sum(f.size for f in catalog.files if f.path.startswith("blobs/") and f.digest not in manifests)
    # One download at a time: each starts when its turn has come, and goes straight into the bundle.
    assert one.transfer.spooled == 0 and one.transfer.streamed == content
    # Several: what arrives ahead of its turn waits in the spool; nothing twice, nothing left behind.
    assert four.transfer.spooled + four.transfer.streamed == content
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["four.tar.zst", "four.tar.zst.sha256", "one.tar.zst", "one.tar.zst.sha256"]
    )


def test_a_restart_behind_what_the_bundle_holds_fails_and_one_before_does_not(tmp_path: Path) -> None:
    taken: list[bytes] = []
    channel = Channel(tmp_path, "blob sha256:x of r")
    channel.write(b"a" * 10)  # ahead of its turn: spooled
    channel.seek(0)
    channel.truncate()  # the registry ignored Range: nothing is in the bundle yet
    channel.write(b"b" * 10)
    channel.attach(taken.append)
    channel.write(b"c" * 5)
    assert b"".join(taken) == b"b" * 10 + b"c" * 5 and channel.spooled == 20 and channel.streamed == 5
    channel.seek(0)
    with pytest.raises(RegistryConnectionError, match="ignored Range"):
        channel.truncate()
    channel.close()
    assert list(tmp_path.iterdir()) == []


class Counting(httpx.BaseTransport):
    def __init__(self) -> None:
        self.inner, self.seen = httpx.HTTPTransport(), Counter[tuple[str, str]]()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen[(request.method, str(request.url))] += 1
        return self.inner.handle_request(request)


def test_planning_is_deterministic_and_sends_each_request_once(
    exported: Exported, plain_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    # The same images twice, one of them also by digest: the same subjects, asked for once each.
    first = exported.images[0]
    refs = [str(i.ref) for i in exported.images] + [str(first.ref.with_digest(first.digest)), str(first.ref)]
    tars = []
    for concurrency in (1, 16):
        transport = Counting()
        config = fast_config(plain_http=True)
        with RegistryClient(config, CredentialResolver({}, use_config_files=False), transport=transport) as client:
            export(client, refs, out := tmp_path / f"c{concurrency}.tar.zst", exported.key.parent, concurrency)
        repeated = {key: n for key, n in transport.seen.items() if n > 1}
        assert repeated == {}
        probes = [url for method, url in transport.seen if method == "GET" and (".sig" in url or "/referrers/" in url)]
        assert probes and len(probes) == len(set(probes))
        tars.append(zstd_cli(out))
    assert tars[0] == tars[1]  # same catalog, same order, same bytes


def test_layer_media_types_that_are_stored() -> None:
    assert already_compressed("application/vnd.oci.image.layer.v1.tar+gzip")
    assert already_compressed("application/vnd.oci.image.layer.v1.tar+zstd")
    assert already_compressed("application/vnd.docker.image.rootfs.diff.tar.gzip")
    assert not already_compressed("application/vnd.oci.image.layer.v1.tar")
    assert not already_compressed("application/vnd.oci.image.config.v1+json")
    assert sha256_digest(images.make_layer("x", 10))  # gzip layers of the sandbox are stored


class _Dropping(httpx.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield self.data
        raise httpx.ReadError("connection reset")


class IgnoresRangeAfterADrop(httpx.BaseTransport):
    """The first GET of ``digest`` drops halfway; every later one is answered as if Range were absent."""

    def __init__(self, digest: str) -> None:
        self.inner, self.digest, self.gets = httpx.HTTPTransport(), digest, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or not request.url.path.endswith(self.digest):
            return self.inner.handle_request(request)
        self.gets += 1
        if self.gets > 1:
            del request.headers["Range"]
            return self.inner.handle_request(request)
        response = self.inner.handle_request(request)
        body = response.read()
        return httpx.Response(200, headers=response.headers, stream=_Dropping(body[: len(body) // 2]))


def one_layer_image(
    registry: RegistryServer, repo: str, seed: str, size: int
) -> tuple[Reference, images.BuiltManifest]:
    """A linux/amd64 image of one layer, pushed as ``repo:1``."""
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer(seed, size)])
    with make_client(registry, user=None) as client:
        images.push(client, ref := Reference(registry.address, repo, "1"), built)
    return ref, built


def test_a_streamed_blob_the_registry_sends_again_from_its_start_fails_the_export_cleanly(
    plain_registry: RegistryServer, tmp_path: Path, keys_dir: Path, repo: str
) -> None:
    ref, built = one_layer_image(plain_registry, repo, "restart", 300_000)
    transport = IgnoresRangeAfterADrop(built.blobs[1].descriptor.digest)
    out = tmp_path / "out"
    out.mkdir()
    config = fast_config(plain_http=True)
    credentials = CredentialResolver({}, use_config_files=False)
    with (
        RegistryClient(config, credentials, transport=transport) as client,
        pytest.raises(RegistryConnectionError, match="ignored Range"),
    ):
        export(client, [str(ref)], out / "b.tar.zst", keys_dir, concurrency=1)
    assert transport.gets == 2 and list(out.iterdir()) == []


def test_a_streamed_blob_with_the_wrong_digest_fails_the_export_cleanly(
    plain_registry: RegistryServer, tmp_path: Path, keys_dir: Path, repo: str
) -> None:
    ref, built = one_layer_image(plain_registry, repo, "wrong", 200_000)
    with make_client(plain_registry, user=None) as client:
        layer = built.blobs[1].descriptor.digest.split(":")[1]
        data = plain_registry.storage / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
        data.write_bytes(os.urandom(built.blobs[1].descriptor.size))  # same size, other bytes
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(DigestMismatchError):
            export(client, [str(ref)], out / "b.tar.zst", keys_dir, concurrency=1)
    assert list(out.iterdir()) == []
