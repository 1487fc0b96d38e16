"""``dtbundle export``: plan, write the signed catalog, then stream every blob into the bundle.

The orchestrator does the IO; the plan (:mod:`dtbundle.export.plan`), the catalog
(:mod:`dtbundle.bundle.format`) and the signature (:mod:`dtbundle.bundle.key`) are built
from values. Blobs stream in catalog order from the registry into the bundle
(:mod:`dtbundle.export.stream`): the blob whose turn it is goes straight in, those that arrive
ahead of their turn wait in a spool beside the output (or in the ``--cache-dir``,
:mod:`dtbundle.export.cache`); at most ``2 * concurrency`` downloads run ahead of the writer,
so disk and memory stay bounded whatever the image size.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle.bundle.format import (
    CATALOG_NAME,
    INDEX_NAME,
    LAYOUT_NAME,
    SIGNATURE_NAME,
    UNSIGNED_ANNOTATION,
)
from dtbundle.bundle.key import PrivateKey, key_id, sign_catalog
from dtbundle.bundle.layout import OCI_LAYOUT_BYTES
from dtbundle.bundle.writer import BundleWriter
from dtbundle.errors import Interrupted, LocalIOError, UsageError
from dtbundle.export.cache import BlobStore, CacheUse, check_writable, remove_dead_leftovers
from dtbundle.export.catalog import build_catalog, carried_root_file
from dtbundle.export.plan import ExportPlan, ImageRequest, Planner, StoredBlob
from dtbundle.export.stream import StreamUse, write_blobs
from dtbundle.oci import Descriptor, blob_path
from dtbundle.oci.kinds import ArtifactKind, attachment_counts
from dtbundle.progress import NO_PROGRESS, Progress, format_bytes, plural
from dtbundle.registry import RegistryClient
from dtbundle.trust.evaluate import (
    ImageVerification,
    SignatureArtifact,
    is_signature_artifact,
    require_verified,
    signature_layers,
    verify_image,
)
from dtbundle.trust.outcome import SignatureOutcome
from dtbundle.trust.policy import Policy
from dtbundle.trust.tuf import TufSource, with_tuf_root


@dataclass(frozen=True)
class ExportSettings:
    requests: tuple[ImageRequest, ...]
    output: Path
    signing_key: PrivateKey
    referrers: bool = True
    concurrency: int = 8
    compression_level: int = 3
    force: bool = False
    extensions: dict[str, Any] = field(default_factory=dict)  # catalog extensions (e.g. Dynatrace options)
    signature_policy: Policy | None = None  # verify image signatures before writing
    require_signatures: bool = False
    tuf: TufSource = field(default_factory=TufSource)  # where a keyless policy's trusted root comes from
    cache_dir: Path | None = None  # keep verified blobs here, content-addressed, across runs


@dataclass(frozen=True)
class ImageSummary:
    """What export carried for one requested image."""

    reference: str  # as requested
    digest: str
    platforms: tuple[str | None, ...]
    original_digest: str | None  # before --platform trimmed the index
    found: dict[ArtifactKind, int]  # attachments carried, by kind
    dropped_with_trim: int  # attachments of the original index, which a trim invalidates

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "platformNames": list(self.platforms),
            "originalDigest": self.original_digest,
            "attachmentCounts": attachment_counts(self.found),
            "droppedWithTrim": self.dropped_with_trim,
        }


@dataclass
class ExportSummary:
    path: Path
    sidecar: Path
    sha256: str
    key_id: str
    images: int
    platforms: int
    artifacts: dict[ArtifactKind, int]
    manifests: int
    blobs: int
    uncompressed_bytes: int
    compressed_bytes: int
    seconds: float
    per_image: list[ImageSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    signatures: list[ImageVerification] = field(default_factory=list)
    cache: CacheUse | None = None  # None: no --cache-dir
    transfer: StreamUse = field(default_factory=StreamUse)  # how blobs reached the bundle (not in JSON)

    def to_json(self) -> dict[str, Any]:
        cache = self.cache
        return {
            "bundle": str(self.path),
            "sha256": self.sha256,
            "sidecar": str(self.sidecar),
            "bundleKey": self.key_id,
            "counts": dict(images=self.images, platforms=self.platforms, manifests=self.manifests, blobs=self.blobs),
            "attachmentCounts": attachment_counts(self.artifacts),
            "uncompressedBytes": self.uncompressed_bytes,
            "compressedBytes": self.compressed_bytes,
            "seconds": round(self.seconds, 3),
            "images": [i.to_json() for i in self.per_image],
            "warnings": list(self.warnings),
            "imageSignatures": SignatureOutcome.of(self.signatures).to_json(),
            "cache": dict(blobs=cache.hits, blobBytes=cache.hit_bytes, redownloaded=cache.refetched) if cache else None,
        }


def created_time() -> datetime.datetime:
    """Now, or $SOURCE_DATE_EPOCH for reproducible bundles."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def run_export(client: RegistryClient, settings: ExportSettings, progress: Progress = NO_PROGRESS) -> ExportSummary:
    """Export ``settings.requests`` into one signed bundle at ``settings.output``; refuse before the first
    blob without the disk space it may need; KeyboardInterrupt becomes Interrupted, after the cleanup."""
    started = time.monotonic()
    output = settings.output
    if output.exists() and not settings.force:
        raise UsageError(f"{output} already exists; pass --force to replace it")
    if not output.parent.is_dir():
        raise UsageError(f"output directory {output.parent} does not exist")
    if not settings.requests:
        raise UsageError("no images to export: give references or --images-file")
    check_writable(output.parent, "choose another --output")
    remove_dead_leftovers(output)
    cache = BlobStore.cache_at(settings.cache_dir).open() if settings.cache_dir else None
    finishing = False
    try:
        progress.phase(f"resolving {plural(len(settings.requests), 'image')}")
        plan = Planner(client, referrers=settings.referrers, concurrency=settings.concurrency).build(settings.requests)
        verifications, policy = None, settings.signature_policy
        if policy is not None:
            policy = with_tuf_root(policy, settings.tuf, progress.phase)
            progress.phase(f"verifying the signatures of {plural(len(plan.images), 'image')}")
            verifications = verify_plan(client, plan, policy)
            if settings.require_signatures:
                require_verified(verifications)
        created = created_time()
        carried = policy.trusted_root.raw if policy and policy.trusted_root and policy.trusted_root.raw else None
        catalog, index = build_catalog(plan, created, verifications, settings.extensions, carried)
        catalog_bytes = catalog.to_bytes()
        signature = sign_catalog(settings.signing_key, catalog_bytes)
        blobs = plan.content_blobs
        _check_room(settings, catalog.total_size + len(catalog_bytes) + len(signature), len(catalog.files), blobs)
        progress.phase(f"writing the catalog and {plural(len(plan.manifests), 'manifest')}")
        store = cache or BlobStore.spool_beside(output)
        try:
            with BundleWriter(output, mtime=int(created.timestamp()), level=settings.compression_level) as writer:
                writer.add_bytes(CATALOG_NAME, catalog_bytes)
                writer.add_bytes(SIGNATURE_NAME, signature)
                writer.add_bytes(LAYOUT_NAME, OCI_LAYOUT_BYTES)
                writer.add_bytes(INDEX_NAME, index)
                for digest, stored in plan.manifests.items():
                    writer.add_bytes(blob_path(digest), stored.manifest.data)
                progress.phase(f"downloading {plural(len(blobs), 'blob')}")
                progress.start(sum(b.descriptor.size for b in blobs))
                transfer = write_blobs(client, store, writer, blobs, settings.concurrency, progress)
                if carried is not None and (root_file := carried_root_file(plan, carried)) is not None:
                    writer.add_bytes(root_file.path, carried)
                progress.phase(f"finishing {output.name}")
                finishing = True
                written = writer.commit()
        finally:
            store.close()
    except KeyboardInterrupt:
        state = "no bundle was written and temporary files were removed; run the same command again"
        if finishing:
            state = f"{output} may be incomplete (it was being finished); run the same command again with --force"
        raise Interrupted(f"interrupted: {state}") from None

    per_image = [
        ImageSummary(
            reference=image.request.source,
            digest=image.manifest.digest,
            platforms=tuple(str(p.platform) if p.platform else None for p in image.platforms),
            original_digest=image.original_digest,
            found=dict(Counter(a.kind for a in plan.artifacts if a.image == n)),
            dropped_with_trim=image.dropped_attachments,
        )
        for n, image in enumerate(plan.images)
    ]
    return ExportSummary(
        path=written.path,
        sidecar=written.sidecar,
        sha256=written.sha256,
        key_id=key_id(settings.signing_key.public_key()),
        images=len(plan.images),
        platforms=sum(len(i.platforms) or 1 for i in plan.images),
        artifacts=dict(Counter(a.kind for a in plan.artifacts)),
        manifests=len(plan.manifests),
        blobs=len(blobs),
        uncompressed_bytes=catalog.total_size,
        compressed_bytes=written.compressed_size,
        seconds=time.monotonic() - started,
        per_image=per_image,
        warnings=list(plan.warnings),
        signatures=list(verifications or []),
        cache=store.use if store.cached else None,
        transfer=transfer,
    )


def verify_plan(client: RegistryClient, plan: ExportPlan, policy: Policy) -> list[ImageVerification]:
    """Verify each planned image's signatures from what the registry served (small layers only)."""
    artifacts = [
        SignatureArtifact(
            a.kind,
            a.subject,
            a.descriptor.digest,
            a.descriptor.media_type,
            plan.manifests[a.descriptor.digest].manifest.data,
        )
        for a in plan.artifacts
        if is_signature_artifact(a.kind, a.descriptor.artifact_type) and a.descriptor.digest in plan.manifests
    ]
    layers: dict[str, bytes] = {}
    for artifact in artifacts:
        for digest, media_type, size, _ in signature_layers(artifact):
            if digest not in layers:
                source = plan.manifests[artifact.digest].source
                layers[digest] = client.get_blob_bytes(source, Descriptor(media_type, digest, size))
    return [
        verify_image(
            i.request.source,
            i.manifest.digest,
            [p.digest for p in i.platforms],
            artifacts,
            layers.get,
            policy,
            i.request.annotations.get(UNSIGNED_ANNOTATION),
        )
        for i in plan.images
    ]


def _check_room(settings: ExportSettings, tar_content: int, files: int, blobs: list[StoredBlob]) -> None:
    """Refuse before the first blob without the disk space the export may need: the tar through
    zstd (< 1 % growth) beside the output, and the blobs downloaded ahead of the writer (window + 1)
    in the spool, or every blob the cache lacks in ``--cache-dir``."""
    tar = tar_content + 1024 * (files + 4)
    room = tar + tar // 100 + (1 << 20)
    if settings.cache_dir is not None:
        missing = BlobStore.cache_at(settings.cache_dir).missing_bytes(blobs)
        _require(settings.cache_dir, missing, f"downloads {format_bytes(missing)}", "--cache-dir")
        _require(settings.output.parent, room, f"bundle {format_bytes(room)}", "--output")
        return
    window = max(1, 2 * settings.concurrency)
    spooled = sum(sorted(b.descriptor.size for b in blobs)[-window - 1 :])
    detail = f"bundle {format_bytes(room)} + temporary files {format_bytes(spooled)}"
    _require(settings.output.parent, room + spooled, detail, "--output")


def _require(directory: Path, needed: int, detail: str, option: str) -> None:
    if needed > (free := shutil.disk_usage(directory).free):
        raise LocalIOError(
            f"needs up to {format_bytes(needed)} in {directory} ({detail}), {format_bytes(free)} free: "
            f"free space or write elsewhere with {option}"
        )
