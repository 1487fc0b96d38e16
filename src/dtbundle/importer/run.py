"""``dtbundle import``: verify a bundle and publish it, byte for byte, in one streaming pass.

1. Open the bundle and verify the catalog signature (before anything else is read).
2. Work out where everything lands (``--registry``/``--map``), refuse colliding
   mappings, and check the target tags (an existing tag with another digest is
   refused unless ``--overwrite``) — all before a single byte is pushed.
3. Stream the bundle once: manifests (they come first) are kept, parsed and
   checked; each blob is pushed while its SHA-256 is being checked (HEAD first,
   cross-repository mount where another target repository has it, never uploaded
   twice). The registry re-checks every blob digest on upload.
4. Only when every entry matched the catalog and the archive ended cleanly:
   manifests, tags, signatures, referrers (:mod:`dtbundle.importer.publish`).

If anything fails before step 4 completes, no tag has moved: the registry may hold
unreferenced blobs, never a tag or manifest pointing at unverified content.
"""

from __future__ import annotations

import contextlib
import queue
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from dtbundle.bundle.format import (
    INDEX_NAME,
    LAYOUT_NAME,
    TARGET_REPOSITORY_ANNOTATION,
    Catalog,
    CatalogFile,
)
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.layout import LayoutWriter
from dtbundle.bundle.reader import open_bundle
from dtbundle.errors import DtbundleError, IntegrityError
from dtbundle.export.run import require_verified
from dtbundle.importer.mapping import RepositoryMapper, check_collisions
from dtbundle.importer.publish import Graph, Publisher, Referrer, TagWrite, existing_tags, referrer_descriptor
from dtbundle.limits import BundleLimits
from dtbundle.oci import Descriptor, parse_manifest
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient
from dtbundle.trust import cosign
from dtbundle.trust.evaluate import SignatureCollector

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ImportSettings:
    bundle: Path
    keys: list[PublicKey] | None  # None: --insecure-skip-verify
    mapper: RepositoryMapper | None = None  # registry target
    to_oci: Path | None = None  # OCI layout target
    overwrite: bool = False
    dry_run: bool = False
    limits: BundleLimits = field(default_factory=BundleLimits)
    signature_policy: cosign.Policy | None = None  # verify image signatures before publishing
    require_signatures: bool = False


@dataclass
class ImportReport:
    bundle: str
    target: str
    dry_run: bool
    signed_by: str | None
    counts: Counter[str] = field(default_factory=Counter)
    bytes_uploaded: int = 0
    seconds: float = 0.0
    images: list[dict[str, str]] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "target": self.target,
            "dryRun": self.dry_run,
            "signedBy": self.signed_by,
            "counts": dict(sorted(self.counts.items())),
            "bytesUploaded": self.bytes_uploaded,
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "signatureVerification": self.signatures,
        }


def placement(
    catalog: Catalog, mapper: RepositoryMapper
) -> tuple[Graph, list[TagWrite], list[tuple[str, Reference, str | None]]]:
    """Where every catalog manifest goes, the tags to write, and the referrers (pure)."""
    graph = Graph()
    writes: list[TagWrite] = []
    referrers: list[tuple[str, Reference, str | None]] = []  # (digest, repo, artifactType)

    def repo_of(registry: str, repository: str) -> Reference:
        return mapper.map_reference(Reference(registry, repository))

    for image in catalog.images:
        repo = repo_of(image.registry, image.repository)
        private = image.annotations.get(TARGET_REPOSITORY_ANNOTATION)
        if private and mapper.default is not None:
            # Carried under a private name (e.g. dynatrace-oneagent-classic), below --registry.
            repo = Reference(*mapper.default.join(private))
        graph.add_manifest(image.digest, image.media_type, [repo])
        for platform in image.platforms:
            graph.add_manifest(platform.digest, platform.media_type, [repo])
        if image.tag:
            writes.append(
                TagWrite(
                    repo.with_tag(image.tag),
                    image.digest,
                    image.media_type,
                    "image",
                    Reference(image.registry, image.repository, image.tag),
                )
            )
    for artifact in catalog.artifacts:
        repo = repo_of(artifact.registry, artifact.repository)
        graph.add_manifest(artifact.digest, artifact.media_type, [repo])
        if artifact.tag:
            writes.append(
                TagWrite(
                    repo.with_tag(artifact.tag),
                    artifact.digest,
                    artifact.media_type,
                    artifact.kind,
                    Reference(artifact.registry, artifact.repository, artifact.tag),
                )
            )
        if artifact.kind == "referrer":
            referrers.append((artifact.digest, repo, artifact.artifact_type))
    check_collisions((w.source, w.target, w.digest) for w in writes)
    return graph, writes, referrers


class _Stream:
    """The one pass over the bundle's files."""

    def __init__(self, graph: Graph, limits: BundleLimits) -> None:
        self.graph, self.limits = graph, limits

    def manifest(self, entry: CatalogFile, data: Iterator[bytes]) -> None:
        if entry.size > self.limits.max_manifest_bytes:
            raise IntegrityError(f"manifest {entry.digest} is larger than {self.limits.max_manifest_bytes} bytes")
        raw = b"".join(data)
        media_type = self.graph.manifest_types[entry.digest]
        try:
            parsed = parse_manifest(raw, media_type)
        except DtbundleError as exc:
            raise IntegrityError(f"bundle manifest {entry.digest} is invalid: {exc}") from None
        repos = self.graph.manifest_repos[entry.digest]
        self.graph.data[entry.digest] = raw
        for child in parsed.manifests:
            self.graph.add_manifest(child.digest, child.media_type, repos)
            self.graph.children.setdefault(entry.digest, []).append(child.digest)
        for blob in parsed.blobs():
            self.graph.blob_repos.setdefault(blob.digest, set()).update(repos)


def run_import(
    client: RegistryClient | None, settings: ImportSettings, progress_factory: Callable[[int], Progress] | None = None
) -> ImportReport:
    started = time.monotonic()
    with open_bundle(settings.bundle, settings.keys, settings.limits) as reader:
        catalog = reader.catalog
        if settings.to_oci is not None:
            target = str(settings.to_oci)
        else:
            target = str(settings.mapper.default) if settings.mapper and settings.mapper.default else "--map targets"
        report = ImportReport(str(settings.bundle), target, settings.dry_run, reader.key_id)
        if settings.to_oci is not None:
            graph, writes, referrer_list = _layout_placement(catalog)
        else:
            assert settings.mapper is not None and client is not None
            graph, writes, referrer_list = placement(catalog, settings.mapper)
        current = existing_tags(client, writes, settings.overwrite) if client is not None else {}
        progress = progress_factory(catalog.total_size) if progress_factory else None
        stream = _Stream(graph, settings.limits)
        sink: _LayoutSink | _RegistrySink
        if settings.to_oci is not None:
            sink = _LayoutSink(settings.to_oci, settings.overwrite)
        else:
            assert client is not None
            sink = _RegistrySink(client, settings.dry_run, report)
        collector = SignatureCollector(catalog) if settings.signature_policy is not None else None
        index_bytes = b""
        try:
            for entry, data in reader.files():
                counted = _counted(data, progress)
                if entry.path == LAYOUT_NAME:
                    b"".join(counted)
                elif entry.path == INDEX_NAME:
                    index_bytes = b"".join(counted)
                elif entry.digest in graph.manifest_types:
                    stream.manifest(entry, counted)
                    sink.manifest_file(entry, graph.data[entry.digest])
                    if collector is not None:
                        collector.manifest(entry.digest, graph.data[entry.digest])
                elif entry.digest in graph.blob_repos:
                    tapped = collector.tap(entry.digest, counted) if collector is not None else counted
                    sink.blob(entry, tapped, graph.blob_repos[entry.digest])
                    for _ in tapped:  # what the sink did not need to read is still checked (and kept)
                        pass
                else:
                    raise IntegrityError(
                        f"bundle entry {entry.path} is referenced by no manifest before it "
                        "(manifests must precede the blobs they use)"
                    )
            # Every entry matched the signed catalog and the archive ended cleanly.
            missing = [d for d in graph.manifest_types if d not in graph.data]
            if missing:
                raise IntegrityError(f"bundle lacks manifest {missing[0]}, which another manifest references")
            if collector is not None and settings.signature_policy is not None:
                verifications = collector.evaluate(settings.signature_policy)
                report.signatures = [v.to_json() for v in verifications]
                if settings.require_signatures:
                    require_verified(verifications)
        except BaseException:
            sink.abort()
            raise
    if settings.to_oci is not None:
        assert isinstance(sink, _LayoutSink)
        sink.commit(index_bytes, report)
    elif not settings.dry_run:
        assert client is not None
        publisher = Publisher(client, graph, report.counts)
        publisher.manifests()
        publisher.tags(writes, current)
        subject_of = {a.digest: a.subject for a in catalog.artifacts}
        referrers = [
            Referrer(subject, repo, referrer_descriptor(graph.data[digest], graph.manifest_types[digest], kind))
            for digest, repo, kind in referrer_list
            for subject in [subject_of[digest]]
        ]
        bundle_indexes = {
            (w.target.with_tag(None), subject_of[w.digest]): w.digest for w in writes if w.kind == "referrers-index"
        }
        publisher.referrers_indexes(referrers, bundle_indexes)
    else:
        _dry_run_summary(writes, current, report)
    if isinstance(sink, _RegistrySink):
        report.bytes_uploaded = sink.uploaded_bytes
    for write in writes:
        if write.kind == "image":
            report.images.append({"source": str(write.source), "target": f"{write.target}@{write.digest}"})
    report.seconds = time.monotonic() - started
    return report


def _counted(data: Iterator[bytes], progress: Progress | None) -> Iterator[bytes]:
    for chunk in data:
        if progress:
            progress(len(chunk))
        yield chunk


def _dry_run_summary(writes: list[TagWrite], current: dict[Reference, str], report: ImportReport) -> None:
    for write in writes:
        if write.kind == "referrers-index":
            continue
        before = current.get(write.target)
        report.counts[
            "tags unchanged"
            if before == write.digest
            else "tags would be overwritten"
            if before
            else "tags would be pushed"
        ] += 1


class _RegistrySink:
    """Pushes blobs to the target repositories while the bundle streams."""

    def __init__(self, client: RegistryClient, dry_run: bool, report: ImportReport) -> None:
        self.client, self.dry_run, self.report = client, dry_run, report
        self.uploaded_bytes = 0

    def manifest_file(self, entry: CatalogFile, data: bytes) -> None:
        pass  # published after verification

    def abort(self) -> None:
        pass  # blobs are content-addressed and unreferenced: harmless, and reused by a re-run

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: set[Reference]) -> None:
        desc = Descriptor("application/octet-stream", entry.digest, entry.size)
        present = {r for r in repos if self.client.blob_size(r, entry.digest) is not None}
        missing = sorted(repos - present, key=str)
        if not missing:
            self.report.counts["blobs exist"] += 1
            return
        if self.dry_run:
            self.report.counts["blobs would be uploaded"] += 1
            self.uploaded_bytes += entry.size
            return
        holders = {r.registry: r for r in sorted(present, key=str)}
        # Mount first where another repository of the same registry has the blob.
        needs_content = []
        for repo in missing:
            holder = holders.get(repo.registry)
            if holder is not None and self._mount(repo, desc, holder):
                continue
            needs_content.append(repo)
        if not needs_content:
            return
        with (
            tempfile.TemporaryFile(prefix="dtbundle-blob-") if len(needs_content) > 1 else _nothing() as spool,
            contextlib.closing(_prefetch(_tee(data, spool))) as pieces,
        ):
            self.client.upload_blob_stream(needs_content[0], desc, pieces)
            self.report.counts["blobs uploaded"] += 1
            self.uploaded_bytes += entry.size
            for repo in needs_content[1:]:
                if self._mount(repo, desc, needs_content[0]):
                    continue
                # A registry that will not mount: upload again, from the spooled copy.
                assert spool is not None
                spool.seek(0)
                self.client.upload_blob_stream(repo, desc, iter(lambda: spool.read(1 << 20), b""))
                self.report.counts["blobs uploaded"] += 1
                self.uploaded_bytes += entry.size

    def _mount(self, repo: Reference, desc: Descriptor, holder: Reference) -> bool:
        if repo.registry != holder.registry:
            return False
        if self.client.mount_blob(repo, desc, holder.repository):
            self.report.counts["blobs mounted"] += 1
            return True
        return False


def _prefetch(source: Iterator[bytes], depth: int = 8) -> Generator[bytes, None, None]:
    """Read ``source`` (decompress, hash) in a thread while the caller uploads.

    zstd, hashlib and sockets release the GIL, so reading the bundle and sending to
    the registry overlap. At most ``depth`` pieces wait in between; the thread is
    stopped and joined before this generator ends, however it ends, so ``source``
    is never iterated by two threads at once.
    """
    pending: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for piece in source:
                if not put(piece):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="dtbundle-read", daemon=True)
    worker.start()
    try:
        while True:
            item = pending.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _tee(data: Iterator[bytes], spool: BinaryIO | None) -> Iterator[bytes]:
    for chunk in data:
        if spool is not None:
            spool.write(chunk)
        yield chunk


class _LayoutSink:
    """Writes an OCI image layout directory (``--to-oci``)."""

    def __init__(self, directory: Path, overwrite: bool) -> None:
        self.writer = LayoutWriter(directory, overwrite)

    def abort(self) -> None:
        self.writer.abort()

    def manifest_file(self, entry: CatalogFile, data: bytes) -> None:
        self.writer.add(entry.digest, iter([data]))

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: set[Reference]) -> None:
        self.writer.add(entry.digest, data)

    def commit(self, index_bytes: bytes, report: ImportReport) -> None:
        report.counts.update(self.writer.commit(index_bytes))


def _layout_placement(catalog: Catalog) -> tuple[Graph, list[TagWrite], list[tuple[str, Reference, str | None]]]:
    graph = Graph()
    here = Reference("oci-layout.invalid", "layout")
    for image in catalog.images:
        graph.add_manifest(image.digest, image.media_type, [here])
        for platform in image.platforms:
            graph.add_manifest(platform.digest, platform.media_type, [here])
    for artifact in catalog.artifacts:
        graph.add_manifest(artifact.digest, artifact.media_type, [here])
    return graph, [], []
