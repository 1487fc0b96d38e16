"""The floor: minimal pull and push clients (httpx, hashlib, zstandard; nothing of dtbundle).

They do the least work that moves the same bytes, so the gap between them and dtbundle is what
dtbundle's own work costs (planning, verification, signing, its bundle format, bookkeeping):

``floor_export``  walks the images level by level (tags, then child manifests and ``.sig`` tags,
                  then the children's ``.sig`` tags; each level's requests in parallel), then
                  writes a zstd tar directly: large blobs download (``LARGE_STREAMS`` at a
                  time) on a thread that receives and hashes them, into the thread that writes
                  them in order (a blob may run 32 MiB ahead of its turn), while small ones (at
                  most 4 MiB) are fetched in parallel; every blob and manifest is checked
                  against its sha256. Layers of a compressed media type
                  (``+gzip``, ``+zstd``, ...) go in stored zstd frames (raw blocks), as dtbundle's
                  writer puts them, the rest is compressed at level 3 on one thread (zstd's
                  worker threads were no faster on 2 cores); ``--compress-all`` compresses
                  every byte. The archive is not a dtbundle bundle (no catalog, signature or
                  index.json).
``floor_import``  reads a dtbundle bundle (catalog first, manifests, then blobs), checks every
                  file's sha256 while streaming, uploads each blob once (POST + PUT, the fewest
                  requests distribution accepts) and mounts it into the other repositories that
                  need it, then puts the manifests (children first). ``jobs=1`` streams each
                  blob from the archive into its upload; more jobs spool blobs (in memory up to
                  4 MiB, else a temporary file) so that ``jobs`` uploads run at once. It does not
                  verify the bundle's signature (microseconds) and assumes an empty target (no
                  HEAD before uploading).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import queue
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import httpx
import zstandard

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
SMALL = 4 * 1024 * 1024
# Large blobs downloading at once (the writer takes them in order). Receiving and hashing are
# CPU-bound: on the 2-core machine 2 or 4 at once were no faster than 1 (4.5-5.3 s against
# 4.8-6.0 s for 1.2 GB under the same load).
LARGE_STREAMS = 1
LARGE_AHEAD = 32  # chunks a large blob may run ahead of the writer (32 MiB)
CHUNK = 1024 * 1024


def client_for(base_url: str, connections: int) -> httpx.Client:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(base_url=base_url, limits=limits, timeout=httpx.Timeout(300.0), trust_env=False)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check(response: httpx.Response, *ok: int) -> httpx.Response:
    if response.status_code not in ok:
        raise SystemExit(f"{response.request.method} {response.request.url}: HTTP {response.status_code}")
    return response


class Pusher:
    """Blob uploads, mounts and manifest puts against one registry (plain HTTP, no auth)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def upload(self, repo: str, digest: str, size: int, body: bytes | Iterable[bytes]) -> None:
        started = _check(self.client.post(f"/v2/{repo}/blobs/uploads/"), 202)
        location = started.headers["location"]
        location += ("&" if "?" in location else "?") + "digest=" + digest  # params= would drop _state
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        _check(self.client.put(location, content=body, headers=headers), 201)

    def mount(self, repo: str, digest: str, source: str) -> None:
        response = self.client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source})
        _check(response, 201)

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> None:
        response = self.client.put(
            f"/v2/{repo}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
        )
        _check(response, 201)


# -- export ---------------------------------------------------------------------------------------------
def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % 512)


_COMPRESSED_SUFFIXES = ("+gzip", "+zstd", ".gzip", ".zstd", "+gz")
_STORED_BLOCK = 128 * 1024
# A stored zstd frame (RFC 8878): magic, Frame_Header_Descriptor 0xC0 (8-byte content size, no
# checksum), Window_Descriptor 0x38 (128 KiB), then raw blocks (Block_Type 0) of at most 128 KiB.
_STORED_HEADER = (0xFD2FB528).to_bytes(4, "little") + bytes([0xC0, 0x38])


class Blob(NamedTuple):
    size: int
    repo: str
    stored: bool  # an already compressed layer: goes into the archive in stored zstd frames


def _walk(
    client: httpx.Client, pool: concurrent.futures.Executor, images: list[tuple[str, str]], store: bool
) -> tuple[dict[str, bytes], dict[str, Blob]]:
    """Every manifest (digest -> bytes) and blob of ``images``."""
    manifests: dict[str, bytes] = {}
    blobs: dict[str, Blob] = {}

    def get(job: tuple[str, str, bool]) -> tuple[str, bool, bytes | None]:
        repo, reference, is_signature = job
        response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404 and is_signature:
            return repo, is_signature, None
        data = _check(response, 200).content
        if reference.startswith("sha256:") and digest_of(data) != reference:
            raise SystemExit(f"{repo}@{reference}: manifest digest mismatch")
        return repo, is_signature, data

    level = [(repo, tag, False) for repo, tag in images]
    while level:
        following: list[tuple[str, str, bool]] = []
        for repo, is_signature, data in pool.map(get, level):
            if data is None or (digest := digest_of(data)) in manifests:
                continue
            manifests[digest] = data
            document = json.loads(data)
            following += [(repo, child["digest"], False) for child in document.get("manifests", [])]
            for n, desc in enumerate([document.get("config"), *document.get("layers", [])]):
                if desc:
                    stored = store and n > 0 and desc["mediaType"].endswith(_COMPRESSED_SUFFIXES)
                    blobs.setdefault(desc["digest"], Blob(int(desc["size"]), repo, stored and desc["size"] > 0))
            if not is_signature:
                following.append((repo, "sha256-" + digest.removeprefix("sha256:") + ".sig", True))
        level = following
    return manifests, blobs


class _Framer:
    """Content of ``size`` bytes as one stored zstd frame: its header, raw blocks, the last one flagged."""

    def __init__(self, size: int) -> None:
        self.left, self.carry = size, b""
        self.header = _STORED_HEADER + size.to_bytes(8, "little")

    def feed(self, chunk: bytes) -> bytes:
        data = self.carry + chunk if self.carry else chunk
        view, parts, at = memoryview(data), [], 0
        while len(data) - at >= _STORED_BLOCK and self.left > _STORED_BLOCK:  # not the last block
            parts += [(_STORED_BLOCK << 3).to_bytes(3, "little"), view[at : at + _STORED_BLOCK]]
            at, self.left = at + _STORED_BLOCK, self.left - _STORED_BLOCK
        self.carry = bytes(view[at:])
        return b"".join(parts)

    def end(self) -> bytes:
        if len(self.carry) != self.left:
            raise SystemExit("stored frame: content size mismatch")
        return ((self.left << 3) | 1).to_bytes(3, "little") + self.carry


def floor_export(
    base_url: str, images: list[tuple[str, str]], out: Path, concurrency: int = 8, store: bool = True
) -> None:
    """Write every manifest and blob of ``images`` ((repository, tag) pairs) into ``out``, a zstd tar.

    ``store``: layers of a compressed media type go in stored frames (as dtbundle writes them), not
    compressed again."""
    streams = min(LARGE_STREAMS, concurrency)
    with (
        client_for(base_url, concurrency + streams) as client,
        concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
        concurrent.futures.ThreadPoolExecutor(streams) as downloads,
        out.open("wb") as sink,
        zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(sink, closefd=False) as z,
    ):
        manifests, blobs = _walk(client, pool, images, store)
        flushed = [True]  # the compressed frame is closed (raw frames may follow)

        def compressed(data: bytes) -> None:
            z.write(data)
            flushed[0] = False

        def raw(data: bytes) -> None:
            if not flushed[0]:
                z.flush(zstandard.FLUSH_FRAME)
                flushed[0] = True
            sink.write(data)

        def add(digest: str, chunks: Iterable[bytes], blob: Blob) -> None:
            compressed(_tar_header("blobs/sha256/" + digest.removeprefix("sha256:"), blob.size))
            if blob.stored:
                framer = _Framer(blob.size)
                raw(framer.header)
                for chunk in chunks:
                    raw(framer.feed(chunk))
                raw(framer.end())
            else:
                for chunk in chunks:
                    compressed(chunk)
            compressed(_padding(blob.size))

        def fetch(digest: str) -> bytes:
            size, repo, _ = blobs[digest]
            data = _check(client.get(f"/v2/{repo}/blobs/{digest}"), 200).content
            if len(data) != size or digest_of(data) != digest:
                raise SystemExit(f"{repo}@{digest}: blob does not match its digest")
            return data

        layout = b'{"imageLayoutVersion":"1.0.0"}'
        compressed(_tar_header("oci-layout", len(layout)) + layout + _padding(len(layout)))
        for digest, data in manifests.items():
            add(digest, [data], Blob(len(data), "", False))
        small = collections.deque(d for d, blob in blobs.items() if blob.size <= SMALL)
        window: collections.deque[tuple[str, concurrent.futures.Future[bytes]]] = collections.deque()

        def refill() -> None:
            while small and len(window) < 4 * concurrency:
                digest = small.popleft()
                window.append((digest, pool.submit(fetch, digest)))

        refill()  # the small blobs arrive while the large ones stream
        large = [(digest, blob) for digest, blob in blobs.items() if blob.size > SMALL]
        queues: list[queue.Queue[bytes | BaseException | None]] = [queue.Queue(LARGE_AHEAD) for _ in large]
        stop = threading.Event()
        for (digest, blob), chunks in zip(large, queues, strict=True):  # started in order, `streams` at once
            downloads.submit(_download, client, digest, blob, chunks, stop)
        try:
            for (digest, blob), chunks in zip(large, queues, strict=True):
                add(digest, _drain(chunks), blob)
            while window:
                digest, future = window.popleft()
                add(digest, [future.result()], blobs[digest])
                refill()
        finally:
            stop.set()  # downloads waiting for room give up
        compressed(b"\0" * 1024)


def _drain(chunks: queue.Queue[bytes | BaseException | None]) -> Iterator[bytes]:
    while (chunk := chunks.get()) is not None:
        if isinstance(chunk, BaseException):
            raise chunk
        yield chunk


def _download(
    client: httpx.Client,
    digest: str,
    blob: Blob,
    chunks: queue.Queue[bytes | BaseException | None],
    stop: threading.Event,
) -> None:
    """GET one large blob, hashing it, into ``chunks`` (bounded: it waits for the writer), then None."""

    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                chunks.put(item, timeout=0.2)
                return
        raise SystemExit("stopped")

    if stop.is_set():
        return
    try:
        with client.stream("GET", f"/v2/{blob.repo}/blobs/{digest}") as response:
            received = _Received(_check(response, 200).iter_raw(CHUNK))
            for chunk in received:
                put(chunk)
        if received.size != blob.size or "sha256:" + received.hasher.hexdigest() != digest:
            raise SystemExit(f"{blob.repo}@{digest}: blob does not match its digest")
        put(None)
    except BaseException as exc:  # handed to the writer, which raises it
        with contextlib.suppress(BaseException):
            put(exc)


class _Received:
    """Chunks passed through, hashed and counted."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks, self.hasher, self.size = chunks, hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.hasher.update(chunk)
            self.size += len(chunk)
            yield chunk


# -- import ---------------------------------------------------------------------------------------------
class _Hashing:
    """Reads an archive member in chunks, hashing them; ``check`` compares with the catalog."""

    def __init__(self, source: IO[bytes], entry: dict[str, Any]) -> None:
        self.source, self.entry = source, entry
        self.hasher, self.size = hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.source.read(CHUNK):
            self.hasher.update(chunk)
            self.size += len(chunk)
            yield chunk

    def check(self) -> None:
        if self.size != self.entry["size"] or self.hasher.hexdigest() != self.entry["sha256"]:
            raise SystemExit(f"bundle file {self.entry['path']} does not match the catalog")


def _members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    for member in tar:
        source = tar.extractfile(member)
        if source is None:
            raise SystemExit(f"bundle entry {member.name} is not a file")
        yield member, source


def _manifest_places(catalog: dict[str, Any], prefix: str) -> dict[str, list[tuple[str, str | None, str, int]]]:
    """digest -> where it goes: (repository, tag or None, media type, level); level 0 goes first."""
    places: dict[str, list[tuple[str, str | None, str, int]]] = collections.defaultdict(list)
    for image in catalog["images"]:
        repo = f"{prefix}/{image['repository']}"
        for platform in image["platforms"]:
            places[platform["digest"]].append((repo, None, platform["mediaType"], 0))
        places[image["digest"]].append((repo, image["tag"], image["mediaType"], 1))
    for artifact in catalog["artifacts"]:
        level = 1 if artifact["mediaType"] in (OCI_INDEX, DOCKER_LIST) else 0
        places[artifact["digest"]].append(
            (f"{prefix}/{artifact['repository']}", artifact["tag"], artifact["mediaType"], level)
        )
    return places


def floor_import(bundle: Path, base_url: str, prefix: str, jobs: int, spool_dir: Path) -> None:
    """Push the images and artifacts of a dtbundle bundle below ``prefix`` of the target registry."""
    with (
        client_for(base_url, jobs) as client,
        concurrent.futures.ThreadPoolExecutor(jobs) as pool,
        bundle.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, read_across_frames=True) as stream,
        tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar,
    ):
        pusher = Pusher(client)
        members = _members(tar)
        catalog = json.loads(next(members)[1].read())
        next(members)  # the catalog's signature: not checked by the floor
        places = _manifest_places(catalog, prefix)
        manifests: dict[str, bytes] = {}
        blob_repos: dict[str, list[str]] = collections.defaultdict(list)
        slots = threading.Semaphore(jobs + 1)  # blobs spooled or uploading at once
        pending: list[concurrent.futures.Future[None]] = []

        def push_blob(digest: str, size: int, repos: list[str], body: bytes | Iterable[bytes]) -> None:
            pusher.upload(repos[0], digest, size, body)
            for repo in repos[1:]:
                pusher.mount(repo, digest, repos[0])

        def push_spooled(digest: str, size: int, repos: list[str], spooled: bytes | IO[bytes]) -> None:
            try:
                if isinstance(spooled, bytes):
                    push_blob(digest, size, repos, spooled)
                else:
                    spooled.seek(0)
                    push_blob(digest, size, repos, iter(lambda: spooled.read(CHUNK), b""))
            finally:
                if not isinstance(spooled, bytes):
                    spooled.close()
                slots.release()

        for entry, (member, source) in zip(catalog["files"], members, strict=True):
            if member.name != entry["path"] or member.size != entry["size"]:
                raise SystemExit(f"bundle entry {member.name} is not the catalog's {entry['path']}")
            digest = "sha256:" + entry["sha256"]
            reader = _Hashing(source, entry)
            if digest in places:
                manifests[digest] = b"".join(reader)
                document = json.loads(manifests[digest])
                repos = {repo for repo, *_ in places[digest]}
                for desc in [document.get("config"), *document.get("layers", [])]:
                    if desc:
                        known = blob_repos[desc["digest"]]
                        known += sorted(repos - set(known))
            elif digest not in blob_repos:  # oci-layout, index.json, a trusted root: checked, not pushed
                for _ in reader:
                    pass
            elif jobs == 1:
                push_blob(digest, entry["size"], blob_repos[digest], reader)
            else:
                slots.acquire()
                spooled: bytes | IO[bytes]
                if entry["size"] <= SMALL:
                    spooled = b"".join(reader)
                else:
                    spooled = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 (closed by push_spooled)
                    for chunk in reader:
                        spooled.write(chunk)
                pending.append(pool.submit(push_spooled, digest, entry["size"], blob_repos[digest], spooled))
            reader.check()
            for future in [f for f in pending if f.done()]:
                future.result()  # raises the upload's error
                pending.remove(future)
        for future in pending:
            future.result()

        def put(job: tuple[str, str, bytes, str]) -> None:
            pusher.put_manifest(*job)

        for level in (0, 1):  # platform manifests and artifacts, then what names them
            jobs_now = [
                (repo, tag or digest, data, media)
                for digest, data in manifests.items()
                for repo, tag, media, at in places[digest]
                if at == level
            ]
            list(pool.map(put, jobs_now))


def read_catalog(bundle: Path) -> dict[str, Any]:
    """The catalog (first entry) of a dtbundle bundle, unverified."""
    with (
        bundle.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        _, source = next(_members(tar))
        catalog: dict[str, Any] = json.loads(source.read())
        return catalog


def main() -> None:
    """``floor.py export URL OUT REPO:TAG...`` or ``floor.py import URL BUNDLE PREFIX`` (a child of the suite)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("url")
    e.add_argument("out", type=Path)
    e.add_argument("images", nargs="+")
    e.add_argument("--concurrency", type=int, default=8)
    e.add_argument("--compress-all", action="store_true", help="compress compressed layers again too")
    i = sub.add_parser("import")
    i.add_argument("url")
    i.add_argument("bundle", type=Path)
    i.add_argument("prefix")
    i.add_argument("--jobs", type=int, default=1)
    i.add_argument("--spool-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.command == "export":
        images = [(ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1]) for ref in args.images]
        floor_export(args.url, images, args.out, args.concurrency, store=not args.compress_all)
    else:
        floor_import(args.bundle, args.url, args.prefix, args.jobs, args.spool_dir)


if __name__ == "__main__":
    main()
