"""Where an import's bytes go: one :class:`Sink` protocol, three sinks.

* :class:`RegistrySink` pushes blobs while the bundle streams (HEAD, cross-repository
  mount, else upload) and publishes manifests and tags after it verified;
* :class:`LayoutSink` writes an OCI image layout directory (``--to-oci``);
* :class:`DryRunSink` only reads the target (registry or layout) and counts what
  would happen; it writes nothing anywhere.

The run (:mod:`dtbundle.importer.run`) calls ``prepare`` before streaming, ``blob`` for
each blob, then ``commit`` once the whole bundle verified, or ``abort``.
"""

from __future__ import annotations

import contextlib
import queue
import tempfile
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from dtbundle.bundle.format import CatalogFile, CatalogImage
from dtbundle.bundle.layout import LayoutWriter, check_layout_dir, merge_index, read_index, ref_names
from dtbundle.importer.plan import ImportPlan, Placement, Repos
from dtbundle.importer.publish import Publisher, existing_tags
from dtbundle.importer.report import Count, ImportReport, Landing, PlannedLanding
from dtbundle.oci import Descriptor, Reference
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.registry import RegistryClient


class Sink(Protocol):
    def prepare(self, placement: Placement) -> None:
        """Check the target before a byte is read (tag conflicts); raise to refuse."""

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        """Take one blob while it streams; ``data`` is unverified until the bundle ends."""

    def commit(self, plan: ImportPlan, bundle_index: bytes) -> None:
        """The bundle verified: make its content reachable (manifests, tags, index)."""

    def abort(self) -> None:
        """Verification failed: leave nothing reachable."""


class RegistrySink:
    """Pushes blobs to the target repositories while the bundle streams, then publishes."""

    def __init__(self, client: RegistryClient, report: ImportReport, overwrite: bool) -> None:
        self.client, self.report, self.overwrite = client, report, overwrite
        self.current: dict[Reference, str] = {}

    def prepare(self, placement: Placement) -> None:
        self.current = existing_tags(self.client, placement.tags, self.overwrite)

    def abort(self) -> None:
        pass  # blobs are content-addressed and unreferenced: harmless, and reused by a re-run

    def commit(self, plan: ImportPlan, bundle_index: bytes) -> None:
        Publisher(self.client, plan, self.report.counts).publish(self.current)

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        desc = Descriptor("application/octet-stream", entry.digest, entry.size)
        present = {r for r in repos if self.client.blob_size(r, entry.digest) is not None}
        missing = sorted(repos - present, key=str)
        if not missing:
            self.report.add(Count.BLOBS_EXIST)
            return
        holders = {r.registry: r for r in sorted(present, key=str)}
        # Mount first where another repository of the same registry has the blob.
        needs_content = [r for r in missing if not self._mount(r, desc, holders.get(r.registry))]
        if not needs_content:
            return
        with (
            tempfile.TemporaryFile(prefix="dtbundle-blob-") if len(needs_content) > 1 else _nothing() as spool,
            contextlib.closing(_prefetch(_tee(data, spool))) as pieces,
        ):
            self.client.upload_blob_stream(needs_content[0], desc, pieces)
            self._uploaded(entry)
            for repo in needs_content[1:]:
                if self._mount(repo, desc, needs_content[0]):
                    continue
                # A registry that will not mount: upload again, from the spooled copy.
                assert spool is not None
                spool.seek(0)
                self.client.upload_blob_stream(repo, desc, iter(lambda: spool.read(1 << 20), b""))
                self._uploaded(entry)

    def _uploaded(self, entry: CatalogFile) -> None:
        self.report.add(Count.BLOBS_UPLOADED)
        self.report.bytes_uploaded += entry.size

    def _mount(self, repo: Reference, desc: Descriptor, holder: Reference | None) -> bool:
        if holder is None or repo.registry != holder.registry:
            return False
        if self.client.mount_blob(repo, desc, holder.repository):
            self.report.add(Count.BLOBS_MOUNTED)
            return True
        return False


class LayoutSink:
    """Writes an OCI image layout directory (``--to-oci``): blobs while streaming, the rest at commit."""

    def __init__(self, directory: Path, report: ImportReport, overwrite: bool) -> None:
        self.writer = LayoutWriter(directory, overwrite)
        self.report = report

    def prepare(self, placement: Placement) -> None:
        pass  # ref-name conflicts are checked when index.json is merged, before anything is renamed

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        self.writer.add(entry.digest, data)

    def abort(self) -> None:
        self.writer.abort()

    def commit(self, plan: ImportPlan, bundle_index: bytes) -> None:
        try:
            for digest in plan.order:
                self.writer.add(digest, iter([plan.manifests[digest].data]))
            done = self.writer.commit(bundle_index)
        except BaseException:
            self.writer.abort()  # no .partial file is left behind
            raise
        self.report.add(Count.BLOBS_WRITTEN, done.blobs_written)
        self.report.add(Count.BLOBS_EXIST, done.blobs_exist)
        self.report.add(Count.INDEX_ENTRIES_ADDED, done.index.added)
        self.report.add(Count.INDEX_ENTRIES_UNCHANGED, done.index.unchanged)
        self.report.add(Count.INDEX_ENTRIES_OVERWRITTEN, done.index.overwritten)


class DryRunSink:
    """Reads the target (a registry, or a layout directory) and counts what an import would do."""

    def __init__(
        self,
        report: ImportReport,
        overwrite: bool,
        client: RegistryClient | None,
        directory: Path | None,
        catalog_images: Sequence[CatalogImage] = (),
    ) -> None:
        self.report, self.overwrite, self.client, self.directory = report, overwrite, client, directory
        self.catalog_images = catalog_images  # a layout's plan: images land under their ref names
        self.current: dict[Reference, str] = {}
        if directory is not None:
            check_layout_dir(directory)

    def prepare(self, placement: Placement) -> None:
        # A dry run reports conflicts in its plan instead of refusing before showing it.
        if self.client is not None:
            self.current = existing_tags(self.client, placement.tags, overwrite=True)

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        self._probe(entry.digest, entry.size, repos)

    def _landing(self, source: Reference, target: str, digest: str, current: str | None) -> PlannedLanding:
        if current is None:
            state = Landing.NEW
        elif current == digest:
            state = Landing.PRESENT
        else:
            state = Landing.OVERWRITE if self.overwrite else Landing.CONFLICT
        return PlannedLanding(str(source), target, digest, state, current)

    def _probe(self, digest: str, size: int, repos: Repos) -> None:
        if self.client is not None:
            client = self.client
            present = all(client.blob_size(r, digest) is not None for r in repos)
            would = Count.BLOBS_WOULD_UPLOAD
        else:
            assert self.directory is not None
            present = (self.directory / "blobs" / "sha256" / digest.split(":", 1)[1]).exists()
            would = Count.BLOBS_WOULD_WRITE
        if present:
            self.report.add(Count.BLOBS_EXIST)
        else:
            self.report.add(would)
            self.report.bytes_uploaded += size

    def abort(self) -> None:
        pass

    def commit(self, plan: ImportPlan, bundle_index: bytes) -> None:
        if self.directory is not None:
            # A layout keeps manifests as blobs too: a real run writes those that are missing.
            for digest in plan.order:
                self._probe(digest, len(plan.manifests[digest].data), frozenset())
            existing = read_index(self.directory)
            _, merged = merge_index(existing, bundle_index, True, self.directory)
            names = ref_names(existing)
            self.report.plan = [
                self._landing(
                    Reference(image.registry, image.repository, image.tag),
                    image.ref_name,
                    image.digest,
                    names.get(image.ref_name),
                )
                for image in self.catalog_images
            ]
            self.report.add(Count.INDEX_ENTRIES_UNCHANGED, merged.unchanged)
            self.report.add(Count.INDEX_ENTRIES_WOULD_ADD, merged.added)
            self.report.add(Count.INDEX_ENTRIES_WOULD_OVERWRITE, merged.overwritten)
            return
        self.report.plan = [
            self._landing(w.source, str(w.target), w.digest, self.current.get(w.target))
            for w in plan.placement.tags
            if w.kind == ArtifactKind.IMAGE
        ]
        for write in plan.placement.tags:
            if write.kind == ArtifactKind.REFERRERS_INDEX:
                continue
            before = self.current.get(write.target)
            if before == write.digest:
                self.report.add(Count.TAGS_UNCHANGED)
            else:
                changed = Count.TAGS_WOULD_OVERWRITE if self.overwrite else Count.TAGS_IN_CONFLICT
                self.report.add(changed if before else Count.TAGS_WOULD_PUSH)


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
