"""Writing an export: one bundle file, standard output, or a set of volumes (``--volume-size``).

Whatever the target, the order is the bundle format's: catalog, signature, layout files,
manifests, then blobs streamed in catalog order (:mod:`dtbundle.export.stream`). A file (or a
volume set) is renamed into place only once complete; standard output has no temporary
file, so an export cut short leaves a stream that every reader finds truncated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dtbundle.bundle.format import CATALOG_NAME, INDEX_NAME, LAYOUT_NAME, SIGNATURE_NAME, Catalog
from dtbundle.bundle.key import sign_catalog
from dtbundle.bundle.layout import OCI_LAYOUT_BYTES
from dtbundle.bundle.writer import STDOUT, BundleWriter, WrittenBundle
from dtbundle.errors import LocalIOError, UsageError
from dtbundle.export.cache import BlobStore, remove_dead_leftovers
from dtbundle.export.catalog import carried_root_file
from dtbundle.export.delta import attachment_blobs
from dtbundle.export.plan import ExportPlan, StoredBlob
from dtbundle.export.stream import PIECE, StreamUse, already_compressed, write_blobs
from dtbundle.export.volumes import (
    RECORD,
    VolumePlan,
    VolumeWriter,
    other_volumes,
    part_path,
    partition,
    tar_entry_bytes,
    volume_catalogs,
    volume_paths,
)
from dtbundle.oci import blob_path
from dtbundle.progress import Progress, format_bytes, plural
from dtbundle.registry import RegistryClient

if TYPE_CHECKING:  # run.py imports this module
    from dtbundle.export.run import ExportSettings


def stdout_spool_anchor() -> Path:
    """Where blobs arriving ahead of their turn wait when the bundle goes to standard output."""
    return Path(tempfile.gettempdir()) / f"dtbundle-stdout-{os.geteuid()}"  # one name per user: only ours are swept


@dataclass(frozen=True)
class WriteJob:
    """One export's writing: the plan, its catalog and what to write where (``settings``)."""

    client: RegistryClient
    settings: ExportSettings
    plan: ExportPlan
    catalog: Catalog
    index: bytes
    blobs: list[StoredBlob]  # content blobs carried, in catalog order
    trusted_root: bytes | None  # carried as the last file (unless a blob already holds it)
    mtime: int

    def write(
        self, store: BlobStore, progress: Progress, finishing: list[bool]
    ) -> tuple[list[WrittenBundle], StreamUse, str | None]:
        """Write the bundle (or the volumes); returns what was written, how blobs arrived, the set id."""
        if self.settings.volume_size is not None:
            return self._volumes(store, progress, finishing, self.settings.volume_size)
        catalog_bytes = self.catalog.to_bytes()
        signature = sign_catalog(self.settings.signing_key, catalog_bytes)
        _check_room(self.settings, self.catalog.total_size + len(catalog_bytes) + len(signature), self)
        progress.phase(f"writing the catalog and {plural(len(self.plan.manifests), 'manifest')}")
        with self._writer(self.settings.output) as writer:
            writer.add_bytes(CATALOG_NAME, catalog_bytes)
            writer.add_bytes(SIGNATURE_NAME, signature)
            self._head(writer, {})
            progress.phase(f"downloading {plural(len(self.blobs), 'blob')}")
            progress.start(sum(b.descriptor.size for b in self.blobs))
            transfer = write_blobs(self.client, store, writer, self.blobs, self.settings.concurrency, progress)
            self._tail(writer)
            progress.phase(f"finishing {writer.path.name}")
            finishing.append(True)
            return [writer.commit()], transfer, None

    def _writer(self, path: Path) -> BundleWriter:
        return BundleWriter(path, mtime=self.mtime, level=self.settings.compression_level)

    def _head(self, writer: BundleWriter, shared: dict[str, Path]) -> None:
        """Layout files, every manifest, then the shared blobs (volumes) from their local files."""
        writer.add_bytes(LAYOUT_NAME, OCI_LAYOUT_BYTES)
        writer.add_bytes(INDEX_NAME, self.index)
        for digest, stored in self.plan.manifests.items():
            writer.add_bytes(blob_path(digest), stored.manifest.data)
        for blob in self.blobs:
            path = shared.get(blob.descriptor.digest)
            if path is None:
                continue
            desc = blob.descriptor
            writer.begin_file(blob_path(desc.digest), desc.size, stored=already_compressed(desc.media_type))
            with path.open("rb") as handle:
                while chunk := handle.read(PIECE):
                    writer.write_data(chunk)
            writer.end_file()

    def _tail(self, writer: BundleWriter) -> None:
        if self.trusted_root is None:
            return
        carried = {b.descriptor.digest for b in self.blobs}
        if (root_file := carried_root_file(self.plan, self.trusted_root, carried)) is not None:
            writer.add_bytes(root_file.path, self.trusted_root)

    def _volumes(
        self, store: BlobStore, progress: Progress, finishing: list[bool], volume_size: int
    ) -> tuple[list[WrittenBundle], StreamUse, str | None]:
        settings = self.settings
        shared_digests = attachment_blobs(self.plan) & {b.descriptor.digest for b in self.blobs}
        own = [b for b in self.blobs if b.descriptor.digest not in shared_digests]
        sizes = [(b.descriptor.digest, b.descriptor.size) for b in own]
        plan = partition(sizes, self._head_tar(shared_digests, len(own), 0), volume_size, frozenset(shared_digests))
        if plan.parts:  # the catalog grows by a line per part: plan again with room for them
            parts = sum(len(p) for p in plan.parts.values())
            plan = partition(sizes, self._head_tar(shared_digests, len(own), parts), volume_size, plan.shared)
        whole = [b for b in own if b.descriptor.digest in plan.volume_of]
        large = [b for b in own if b.descriptor.digest in plan.parts]
        paths = volume_paths(settings.output, plan.count)
        earlier = other_volumes(settings.output, paths)  # read once: each is a bundle head to open
        for path in [*paths, *earlier]:
            if path.exists() and not settings.force:
                raise UsageError(f"{path} already exists; pass --force to replace the volumes of that set")
            remove_dead_leftovers(path)
        repeated = sum(
            f.size for f in self.catalog.files if f.digest not in plan.volume_of and f.digest not in plan.parts
        )
        tar = self.catalog.total_size + (plan.count - 1) * repeated + (len(self.catalog.to_bytes()) + 8192) * plan.count
        _check_room(settings, tar, self, plan)
        progress.phase(
            f"downloading {plural(len(shared_digests), 'attachment blob')} every volume carries"
            + (f" and {plural(len(large), 'blob')} larger than a volume" if large else "")
        )
        progress.start(sum(b.descriptor.size for b in own))
        local = {
            b.descriptor.digest: store.fetch(self.client, b, progress.advance if b in large else lambda n: None)
            for b in self.blobs
            if b.descriptor.digest in shared_digests or b.descriptor.digest in plan.parts
        }
        hashes = {
            b.descriptor.digest: _part_hashes(local[b.descriptor.digest], plan.parts[b.descriptor.digest])
            for b in large
        }
        catalogs = volume_catalogs(self.catalog, plan, frozenset(self.plan.manifests), hashes)
        catalog_bytes = [c.to_bytes() for c in catalogs]
        signed = [(data, sign_catalog(settings.signing_key, data)) for data in catalog_bytes]
        shared = {d: p for d, p in local.items() if d in shared_digests}
        progress.phase(f"writing {plural(plan.count, 'volume')} of at most {format_bytes(volume_size)}")
        writer = VolumeWriter(
            paths, signed, plan, lambda w: self._head(w, shared), self._tail, volume_size, self._writer
        )
        try:
            transfer = write_blobs(self.client, store, writer, whole, settings.concurrency, progress)
            for blob in large:
                _write_parts(writer, blob, local[blob.descriptor.digest], plan)
            finishing.append(True)
            writer.finish()
            written = writer.publish()
        except BaseException:
            writer.abort()
            raise
        for stale in earlier:  # --force: the set replaces an earlier one
            for path in (stale, stale.with_name(stale.name + ".sha256")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        assert catalogs[0].volume is not None
        return written, transfer, catalogs[0].volume.set

    def _head_tar(self, shared: AbstractSet[str], own_files: int, parts: int) -> int:
        """Tar bytes every volume carries: catalog (with room for volume numbers and ``parts`` part
        records), signature, layout files, manifests, shared blobs, the trusted root, the end of the archive."""
        catalog = len(self.catalog.to_bytes()) + 20 * own_files + 256 * parts + 512
        files = [catalog, 4096, len(OCI_LAYOUT_BYTES), len(self.index)]
        files += [len(m.manifest.data) for m in self.plan.manifests.values()]
        files += [b.descriptor.size for b in self.blobs if b.descriptor.digest in shared]
        if self.trusted_root is not None:
            files.append(len(self.trusted_root))
        return sum(tar_entry_bytes(size) for size in files) + 2 * RECORD


def _part_hashes(path: Path, parts: Sequence[tuple[int, int]]) -> list[str]:
    """The SHA-256 (hex) of each part of the blob in ``path``: the catalog lists them before they are written."""
    hashes = []
    with path.open("rb") as handle:
        for _, size in parts:
            hasher, left = hashlib.sha256(), size
            while left and (chunk := handle.read(min(PIECE, left))):
                hasher.update(chunk)
                left -= len(chunk)
            hashes.append(hasher.hexdigest())
    return hashes


def _write_parts(writer: VolumeWriter, blob: StoredBlob, path: Path, plan: VolumePlan) -> None:
    """A blob larger than a volume, as its parts, each into its volume (from the verified local copy)."""
    desc = blob.descriptor
    with path.open("rb") as handle:
        for n, (_, size) in enumerate(plan.parts[desc.digest], 1):
            writer.begin_file(part_path(desc.digest, n), size, stored=already_compressed(desc.media_type))
            left = size
            while left and (chunk := handle.read(min(PIECE, left))):
                writer.write_data(chunk)
                left -= len(chunk)
            writer.end_file()


def _check_room(settings: ExportSettings, tar_content: int, job: WriteJob, volumes: VolumePlan | None = None) -> None:
    """Refuse before the first blob without the disk space the export may need: the tar through
    zstd (< 1 % growth) beside the output (every volume, for a set), and the blobs downloaded ahead
    of the writer (window + 1) in the spool, or every blob the cache lacks in ``--cache-dir``."""
    files = len(job.catalog.files) + 4 * (volumes.count if volumes else 1)
    tar = tar_content + 1024 * files  # ``tar_content`` counts the files every volume repeats, each time
    room = tar + tar // 100 + (1 << 20)
    where = settings.output.parent
    if settings.output == STDOUT:  # the bundle takes no room here; only what waits in the spool does
        room, where = 0, stdout_spool_anchor().parent
    blobs: Sequence[StoredBlob] = job.blobs
    if settings.cache_dir is not None:
        missing = BlobStore.cache_at(settings.cache_dir).missing_bytes(list(blobs))
        _require(settings.cache_dir, missing, f"downloads {format_bytes(missing)}", "--cache-dir")
        _require(where, room, f"bundle {format_bytes(room)}", "--output")
        return
    window = max(1, 2 * settings.concurrency)
    spooled = sum(sorted(b.descriptor.size for b in blobs)[-window - 1 :])
    if volumes is not None:  # blobs larger than a volume are downloaded whole before they are split
        spooled += sum(size for parts in volumes.parts.values() for _, size in parts)
    detail = f"bundle {format_bytes(room)} + temporary files {format_bytes(spooled)}"
    _require(where, room + spooled, detail, "--output" if settings.output != STDOUT else "TMPDIR")


def _require(directory: Path, needed: int, detail: str, option: str) -> None:
    if needed > (free := shutil.disk_usage(directory).free):
        raise LocalIOError(
            f"needs up to {format_bytes(needed)} in {directory} ({detail}), {format_bytes(free)} free: "
            f"free space or write elsewhere with {option}"
        )
