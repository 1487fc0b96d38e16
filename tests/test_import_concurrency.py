"""Import concurrency (issue 13): what the registry sees on the wire, through an observing proxy in
front of a real registry, and the upload pieces (spool, streamed upload with resume) in isolation.

Uploads overlap, each blob is one streamed request, existence checks come in one batch before any
upload, manifests go level by level and tags last — and a tampered bundle still writes no manifest
and no tag at all.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dtbundle.bundle.key import load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.errors import IntegrityError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.plan import build_plan, place
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.importer.spool import Spool
from dtbundle.oci import Descriptor
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient
from dtbundle.registry.credentials import CredentialResolver
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import flip_byte, read_entries, write_entries
from tests.support.faults import Fault, FaultProxy
from tests.support.registries import Exported, fast_config

REF = Reference("reg.example", "team/app")


class GatedProxy(FaultProxy):
    """Holds the first ``parties`` blob uploads (their complete ``PUT``) until that many are in flight
    at once: sequential uploads pass only when the gate gives up (``overlapped`` stays False)."""

    def __init__(self, upstream: str, parties: int) -> None:
        super().__init__(upstream)
        self.gate = threading.Barrier(parties, timeout=30)
        self.overlapped = False

    def take(self, method: str, path: str) -> Fault | None:
        if method == "PUT" and "/blobs/uploads/" in path and not self.gate.broken:
            try:
                self.gate.wait()
                self.overlapped = True
                self.gate.abort()  # open from now on
            except threading.BrokenBarrierError:
                pass
        return super().take(method, path)


@pytest.fixture
def proxy(plain_registry: RegistryServer) -> Iterator[FaultProxy]:
    server = FaultProxy(plain_registry.address)
    yield server
    server.stop()


def proxied_client(proxy: FaultProxy, **config: object) -> RegistryClient:
    return RegistryClient(fast_config(plain_http=True, **config), CredentialResolver({}, use_config_files=False))


def import_through(proxy: FaultProxy, bundle: Path, pub: Path, **config: object) -> str:
    where = f"{proxy.address}/{uuid.uuid4().hex[:10]}"
    settings = ImportSettings(bundle, [load_public_key(pub)], RepositoryMapper(where), state_file=None, concurrency=4)
    with proxied_client(proxy, **config) as client:
        run_import(client, settings)
    return where


def is_blob_upload(method: str, path: str) -> bool:
    return method in ("PUT", "PATCH") and "/blobs/uploads/" in path


def test_several_blobs_are_uploaded_at_once(plain_registry: RegistryServer, exported: Exported) -> None:
    proxy = GatedProxy(plain_registry.address, parties=2)
    try:
        import_through(proxy, exported.path, exported.pub)
    finally:
        proxy.stop()
    assert proxy.overlapped, "two blob uploads were never in flight at the same time"


def test_each_blob_is_one_streamed_request(proxy: FaultProxy, exported: Exported) -> None:
    # The old stream uploads cut blobs into stream_chunk_bytes PATCHes; each blob is one request now.
    import_through(proxy, exported.path, exported.pub, stream_chunk_bytes=1024)
    uploads = [(m, p) for m, p in proxy.requests if is_blob_upload(m, p)]
    posts = [p for m, p in proxy.requests if m == "POST" and "/blobs/uploads/" in p and "mount=" not in p]
    assert uploads and all(m == "PUT" and "digest=sha256" in p for m, p in uploads)
    assert len(uploads) == len(posts)  # one POST and one PUT with the body per uploaded blob


def test_blobs_above_the_monolithic_size_are_one_patch_and_an_empty_put(proxy: FaultProxy, exported: Exported) -> None:
    import_through(proxy, exported.path, exported.pub, monolithic_upload_max=1024, stream_chunk_bytes=1024)
    patches = [p.split("?")[0] for m, p in proxy.requests if m == "PATCH"]
    assert patches and len(patches) == len(set(patches)), "an upload session got more than one PATCH"


def test_existence_checks_are_batched_before_any_upload(proxy: FaultProxy, exported: Exported) -> None:
    import_through(proxy, exported.path, exported.pub)
    methods = [(m, p) for m, p in proxy.requests if "/blobs/" in p]
    first_upload = next(i for i, (m, p) in enumerate(methods) if m == "POST")
    heads = [i for i, (m, p) in enumerate(methods) if m == "HEAD"]
    assert heads and max(heads) < first_upload


def test_manifests_level_by_level_then_tags(proxy: FaultProxy, exported: Exported) -> None:
    where = import_through(proxy, exported.path, exported.pub)
    with open_bundle(exported.path, None) as reader:
        cat = reader.catalog
        raw = {e.digest: b"".join(d) for e, d in reader.files() if e.path.startswith("blobs/")}
    levels = build_plan(place(cat, RepositoryMapper(where)), raw, frozenset(raw)).levels()
    assert len(levels) >= 2
    puts = [p for m, p in proxy.requests if m == "PUT" and "/manifests/" in p]
    position = {}
    for n, path in enumerate(puts):
        position.setdefault(path.rsplit("/", 1)[1], []).append(n)
    by_digest = [[n for d in level for n in position.get(d, [])] for level in levels]
    pushed = [ns for ns in by_digest if ns]
    assert len(pushed) >= 2
    for lower, upper in itertools.pairwise(pushed):
        assert max(lower) < min(upper), "a manifest was pushed before every manifest of the level below existed"
    tags = [n for n, path in enumerate(puts) if not path.rsplit("/", 1)[1].startswith("sha256:")]
    digests = [n for n, path in enumerate(puts) if path.rsplit("/", 1)[1].startswith("sha256:")]
    assert tags and min(tags) > max(digests)
    last_blob = max(n for n, (m, p) in enumerate(proxy.requests) if is_blob_upload(m, p))
    first_manifest = min(n for n, (m, p) in enumerate(proxy.requests) if m == "PUT" and "/manifests/" in p)
    assert last_blob < first_manifest


def test_a_blob_tampered_late_writes_no_manifest_and_no_tag(
    proxy: FaultProxy, exported: Exported, tmp_path: Path
) -> None:
    entries = read_entries(exported.path)
    blobs = [i for i, (name, _) in enumerate(entries) if name.startswith("blobs/")]
    last = blobs[-1]  # the last entry: other blobs are uploaded (or being uploaded) by then
    entries[last] = (entries[last][0], flip_byte(entries[last][1], 0))
    bad = tmp_path / "bad.tar.zst"
    write_entries(bad, entries)
    with pytest.raises(IntegrityError):
        import_through(proxy, bad, exported.pub)
    assert not [p for m, p in proxy.requests if m == "PUT" and "/manifests/" in p]


# -- the pieces --------------------------------------------------------------------------------------------
def test_a_spool_withholds_the_last_byte_until_the_reader_verified() -> None:
    spool = Spool("sha256:" + "0" * 64, 10)
    got = bytearray()
    failure: list[BaseException] = []

    def upload() -> None:
        try:
            for piece in spool.read_from(0):
                got.extend(piece)
        except IntegrityError as exc:
            failure.append(exc)
        finally:
            spool.done()

    def tampered() -> Iterator[bytes]:
        yield b"01234"
        yield b"56789"
        raise IntegrityError("blobs/sha256/… does not match its catalog sha256")

    thread = threading.Thread(target=upload)
    thread.start()
    with pytest.raises(IntegrityError):
        spool.fill(tampered())
    thread.join(10)
    assert failure and len(got) < 10  # never the whole blob: no upload of it could complete

    spool = Spool("sha256:" + "0" * 64, 10)
    spool.fill(iter([b"01234", b"56789"]))
    assert b"".join(spool.read_from(0)) == b"0123456789" and b"".join(spool.read_from(7)) == b"789"
    spool.done()


class DroppingRegistry:
    """An upload endpoint whose first streamed request breaks after half the body; the registry
    keeps that half (as distribution does) and reports it on ``GET``."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.held, self.seen, self.final = blob, bytearray(), [], b""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        loc = {"Location": "/v2/team/app/blobs/uploads/u1"}
        self.seen.append(f"{request.method} {request.headers.get('Content-Range', '')}".strip())
        if request.method == "POST":
            return httpx.Response(202, headers=loc)
        if request.method == "GET":
            return httpx.Response(204, headers={**loc, "Range": f"0-{len(self.held) - 1}"})
        body = b"".join(request.stream)  # type: ignore[union-attr]
        if request.method == "PUT" and body and not self.held:
            self.held += body[: len(body) // 2]
            raise httpx.WriteError("broken pipe", request=request)
        if request.method == "PATCH":
            start = int(request.headers["Content-Range"].split("-")[0])
            assert start == len(self.held), "the rest must start where the registry is"
            self.held += body
            return httpx.Response(202, headers={**loc, "Range": f"0-{len(self.held) - 1}"})
        self.held += body
        self.final = bytes(self.held)
        return httpx.Response(201, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(self.held).hexdigest()})


def test_a_broken_streamed_upload_resumes_from_the_registry_range() -> None:
    blob = bytes(range(256)) * 1000
    desc = Descriptor("application/octet-stream", "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    registry = DroppingRegistry(blob)
    offsets: list[int] = []

    def read_from(offset: int) -> Iterator[bytes]:
        offsets.append(offset)
        yield blob[offset:]

    config = fast_config(plain_http=True)
    with RegistryClient(config, transport=httpx.MockTransport(registry)) as client:
        client.upload_blob_from(REF, desc, read_from)
    half = len(blob) // 2
    assert registry.final == blob
    assert registry.seen == ["POST", "PUT", "GET", f"PATCH {half}-{len(blob) - 1}", "PUT"]
    assert offsets == [0, half]
