"""Where an import's bytes go: one :class:`Sink` protocol, three sinks.

* :class:`RegistrySink` pushes blobs while the bundle streams (what the target holds is asked
  once, up front; a cross-repository mount where another repository of the same registry has
  the blob; else an upload, several at once, each from a temporary copy the reader writes —
  :mod:`dtbundle.importer.workers`, :mod:`dtbundle.importer.spool`) and publishes manifests and
  tags after it verified;
* :class:`LayoutSink` writes an OCI image layout directory (``--to-oci``);
* :class:`DryRunSink` only reads the target (registry or layout) and counts what
  would happen; it writes nothing anywhere.

The run (:mod:`dtbundle.importer.run`) calls ``prepare`` before streaming, ``planned`` once the
plan is known (before the first blob), ``require`` for the blobs a delta bundle left out, ``blob``
for each blob, ``finish`` once the stream ended and verified (every upload done), ``holds`` to
learn which manifests are complete at the target (a volume set imported in parts), then
``commit``; or ``abort``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from dtbundle.bundle.format import CatalogFile, CatalogImage, CatalogSplit
from dtbundle.bundle.layout import LayoutWriter, check_layout_dir, merge_index, read_index, ref_names
from dtbundle.importer.parts import PartStore
from dtbundle.importer.plan import ImportPlan, Placement, Repos
from dtbundle.importer.publish import Publisher, existing_tags
from dtbundle.importer.report import Count, ImportReport, Landing, PlannedLanding
from dtbundle.importer.spool import Spool
from dtbundle.importer.workers import Presence, UploadPool, find_required, probe, requests_at_once
from dtbundle.limits import IMPORT_CONCURRENCY
from dtbundle.oci import Descriptor, Reference
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.registry import RegistryClient

Required = Mapping[str, tuple[int, tuple[str, ...]]]  # a delta's left-out blobs: digest -> (size, seen in)


class Sink(Protocol):
    def prepare(self, placement: Placement) -> None:
        """Check the target before a byte is read (tag conflicts); raise to refuse."""

    def planned(self, plan: ImportPlan) -> None:
        """The plan is complete (the manifests were read): called once, before the first blob."""

    def require(self, plan: ImportPlan, required: Required) -> list[str]:
        """Make sure the target holds the blobs a delta bundle left out (mounting them where it can);
        return a description of each one missing."""

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        """Take one blob while it streams; ``data`` is unverified until the bundle ends."""

    def holds(self, digest: str, repos: Repos) -> bool:
        """After :meth:`finish`: whether the target holds the blob in every one of ``repos``."""

    def joined(self, split: CatalogSplit, repos: Repos, parts: PartStore) -> None:
        """A blob larger than a volume, every part of it verified: put it at the target from its parts."""

    def finish(self) -> None:
        """The bundle verified: wait for what is still under way (uploads); raise its error."""

    def commit(self, plan: ImportPlan, bundle_index: bytes) -> None:
        """The bundle verified: make its content reachable (manifests, tags, index)."""

    def abort(self) -> None:
        """Verification failed: leave nothing reachable."""


class RegistrySink:
    """Pushes blobs to the target repositories while the bundle streams, then publishes.

    Uploads run on ``concurrency`` threads (:class:`UploadPool`); the reader writes each blob to
    upload into a :class:`Spool` that its upload reads at the same time or later, and whose last
    byte it hands out only once the reader verified the blob. Existence checks are one batch
    (:func:`probe`) once the plan is known; manifests and tags are written only at ``commit``.
    """

    def __init__(
        self,
        client: RegistryClient,
        report: ImportReport,
        overwrite: bool,
        concurrency: int = IMPORT_CONCURRENCY,
        confines: Callable[[str, str], bool] = lambda registry, repository: True,
    ) -> None:
        self.client, self.report, self.overwrite, self.confines = client, report, overwrite, confines
        self.current: dict[Reference, str] = {}
        self.parallel = requests_at_once(concurrency, client)
        self.presence: Presence | None = None
        self.pool = UploadPool(min(concurrency, client.config.limits.max_connections))
        self._lock = threading.Lock()  # the report's counters and landed, from upload threads
        self.landed: set[tuple[Reference, str]] = set()  # (repository, blob) pairs this run put there

    def prepare(self, placement: Placement) -> None:
        self.current = existing_tags(self.client, placement.tags, self.overwrite, self.parallel)

    def planned(self, plan: ImportPlan) -> None:
        self.presence = probe(self.client, plan, self.parallel)

    def require(self, plan: ImportPlan, required: Required) -> list[str]:
        assert self.presence is not None
        # Asked first, mounted only when every one can be had: a refused delta import writes nothing.
        ask = find_required(self.client, plan, self.presence, required, self.parallel, False, self.confines)
        if ask[1]:
            return ask[1]
        held, missing = find_required(self.client, plan, self.presence, required, self.parallel, True, self.confines)
        if missing:  # found by HEAD a moment ago: the registry would not mount it (some may be mounted now)
            return [f"{m} (the registry holds it elsewhere but refused to mount it)" for m in missing]
        self.landed |= held
        self.report.add(Count.BLOBS_MOUNTED, len(held))
        there = sum(1 for d in required for r in plan.blobs.get(d, ()) if (r, d) in self.presence.blobs)
        self.report.add(Count.BLOBS_REQUIRED_PRESENT, there)
        return missing

    def holds(self, digest: str, repos: Repos) -> bool:
        known = self.presence.blobs if self.presence is not None else set()
        return all((r, digest) in known or (r, digest) in self.landed for r in repos)

    def joined(self, split: CatalogSplit, repos: Repos, parts: PartStore) -> None:
        missing = sorted((r for r in repos if not self.holds(split.digest, frozenset([r]))), key=str)
        if not missing:
            self._count(Count.BLOBS_EXIST)
            return
        desc = Descriptor("application/octet-stream", split.digest, split.size)
        holders = {r.registry: r for r in sorted(repos - set(missing), key=str)}
        needs_content = [r for r in missing if not self._mount(r, desc, holders.get(r.registry))]
        entry = CatalogFile(f"blobs/sha256/{split.digest[7:]}", split.size, split.digest[7:])
        for n, repo in enumerate(needs_content):
            if n and self._mount(repo, desc, needs_content[0]):
                continue
            self.client.upload_blob_from(repo, desc, lambda offset: parts.read_from(split, offset))
            self._uploaded(entry, repo)

    def abort(self) -> None:
        # Blobs are content-addressed and unreferenced: harmless, and reused by a re-run.
        self.pool.cancel()

    def finish(self) -> None:
        self.pool.finish()

    def commit(self, plan: ImportPlan, bundle_index: bytes) -> None:
        known = self.presence.manifests if self.presence is not None else None
        Publisher(self.client, plan, self.report.counts, known, self.parallel).publish(self.current)

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        self.pool.check()
        desc = Descriptor("application/octet-stream", entry.digest, entry.size)
        present = {r for r in repos if self._exists(r, entry.digest)}
        missing = sorted(repos - present, key=str)
        if not missing:
            self._count(Count.BLOBS_EXIST)
            return
        with self._lock:
            self.landed.update((r, entry.digest) for r in present)
        holders = {r.registry: r for r in sorted(present, key=str)}
        spool = self.pool.open(entry.digest, entry.size)
        self.pool.submit(spool, lambda: self._push(entry, desc, missing, holders, spool))
        spool.fill(data)  # the upload reads it meanwhile; its last byte once the entry verified

    def _exists(self, repo: Reference, digest: str) -> bool:
        if self.presence is not None:
            return (repo, digest) in self.presence.blobs
        return self.client.blob_size(repo, digest) is not None

    def _push(
        self,
        entry: CatalogFile,
        desc: Descriptor,
        missing: list[Reference],
        holders: dict[str, Reference],
        spool: Spool,
    ) -> None:
        """On an upload thread: mount where another repository of the registry has the blob, else upload."""
        needs_content = [r for r in missing if not self._mount(r, desc, holders.get(r.registry))]
        if not needs_content:
            spool.abandon()
            return
        self.client.upload_blob_from(needs_content[0], desc, spool.read_from)
        self._uploaded(entry, needs_content[0])
        for repo in needs_content[1:]:
            if self._mount(repo, desc, needs_content[0]):
                continue
            # A registry that will not mount: upload again, from the same copy.
            self.client.upload_blob_from(repo, desc, spool.read_from)
            self._uploaded(entry, repo)

    def _count(self, count: Count) -> None:
        with self._lock:
            self.report.add(count)

    def _uploaded(self, entry: CatalogFile, repo: Reference) -> None:
        with self._lock:
            self.report.add(Count.BLOBS_UPLOADED)
            self.report.bytes_uploaded += entry.size
            self.landed.add((repo, entry.digest))

    def _mount(self, repo: Reference, desc: Descriptor, holder: Reference | None) -> bool:
        if holder is None or repo.registry != holder.registry:
            return False
        if self.client.mount_blob(repo, desc, holder.repository):
            with self._lock:
                self.report.add(Count.BLOBS_MOUNTED)
                self.landed.add((repo, desc.digest))
            return True
        return False


class LayoutSink:
    """Writes an OCI image layout directory (``--to-oci``): blobs while streaming, the rest at commit."""

    def __init__(self, directory: Path, report: ImportReport, overwrite: bool) -> None:
        self.writer = LayoutWriter(directory, overwrite)
        self.report = report

    def prepare(self, placement: Placement) -> None:
        pass  # ref-name conflicts are checked when index.json is merged, before anything is renamed

    def planned(self, plan: ImportPlan) -> None:
        pass

    def require(self, plan: ImportPlan, required: Required) -> list[str]:
        return [f"{d} in {self.writer.directory}" for d in sorted(required) if not self.writer.holds(d)]

    def holds(self, digest: str, repos: Repos) -> bool:
        return self.writer.holds(digest)

    def joined(self, split: CatalogSplit, repos: Repos, parts: PartStore) -> None:
        self.writer.add(split.digest, parts.reader(split))

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        self.writer.add(entry.digest, data)

    def finish(self) -> None:
        pass

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
        concurrency: int = IMPORT_CONCURRENCY,
        confines: Callable[[str, str], bool] = lambda registry, repository: True,
    ) -> None:
        self.report, self.overwrite, self.client, self.directory = report, overwrite, client, directory
        self.confines = confines
        self.catalog_images = catalog_images  # a layout's plan: images land under their ref names
        self.current: dict[Reference, str] = {}
        self.parallel = requests_at_once(concurrency, client) if client is not None else 1
        self.presence: Presence | None = None
        self.carried: set[tuple[Reference, str]] = set()  # required blobs a real run would mount
        self.carried_digests: set[str] = set()  # blobs this run's volumes carry
        if directory is not None:
            check_layout_dir(directory)

    def prepare(self, placement: Placement) -> None:
        # A dry run reports conflicts in its plan instead of refusing before showing it.
        if self.client is not None:
            self.current = existing_tags(self.client, placement.tags, True, self.parallel)

    def planned(self, plan: ImportPlan) -> None:
        if self.client is not None:
            self.presence = probe(self.client, plan, self.parallel, manifests=False)

    def require(self, plan: ImportPlan, required: Required) -> list[str]:
        if self.client is None:
            assert self.directory is not None
            return [f"{d} in {self.directory}" for d in sorted(required) if not self._in_layout(d)]
        presence = self.presence or Presence()
        held, missing = find_required(
            self.client, plan, presence, required, self.parallel, mount=False, confines=self.confines
        )
        self.carried |= held  # a real run mounts them
        return missing

    def holds(self, digest: str, repos: Repos) -> bool:
        if self.client is None:
            return digest in self.carried_digests or self._in_layout(digest)
        known = self.presence.blobs if self.presence is not None else set()
        return all((r, digest) in known or (r, digest) in self.carried or digest in self.carried_digests for r in repos)

    def joined(self, split: CatalogSplit, repos: Repos, parts: PartStore) -> None:
        self.carried_digests.add(split.digest)
        self._probe(split.digest, split.size, repos)

    def _in_layout(self, digest: str) -> bool:
        assert self.directory is not None
        return (self.directory / "blobs" / "sha256" / digest.split(":", 1)[1]).is_file()

    def blob(self, entry: CatalogFile, data: Iterator[bytes], repos: Repos) -> None:
        self.carried_digests.add(entry.digest)  # a real run puts it there
        self._probe(entry.digest, entry.size, repos)

    def finish(self) -> None:
        pass

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
            client, presence = self.client, self.presence
            present = all(
                (r, digest) in presence.blobs if presence is not None else client.blob_size(r, digest) is not None
                for r in repos
            )
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
