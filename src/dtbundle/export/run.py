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
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle.bundle.format import UNSIGNED_ANNOTATION
from dtbundle.bundle.key import PrivateKey, key_id
from dtbundle.bundle.writer import STDOUT
from dtbundle.errors import Interrupted, UsageError
from dtbundle.export.cache import BlobStore, check_writable, remove_dead_leftovers
from dtbundle.export.catalog import build_catalog
from dtbundle.export.delta import leave_out
from dtbundle.export.plan import ExportPlan, ImageRequest, Planner
from dtbundle.export.summary import ExportSummary, ImageSummary
from dtbundle.export.write import WriteJob, stdout_spool_anchor
from dtbundle.oci import Descriptor
from dtbundle.progress import NO_PROGRESS, Progress, plural
from dtbundle.registry import RegistryClient
from dtbundle.trust.evaluate import (
    ImageVerification,
    SignatureArtifact,
    is_signature_artifact,
    require_verified,
    signature_layers,
    verify_image,
)
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
    # A delta bundle: blob digest -> (size, repositories) the target holds (an inventory's blob_locations)
    inventory: Mapping[str, tuple[int, tuple[str, ...]]] | None = None
    volume_size: int | None = None  # write a set of volumes of at most this many bytes each


def created_time() -> datetime.datetime:
    """Now, or $SOURCE_DATE_EPOCH for reproducible bundles."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def run_export(client: RegistryClient, settings: ExportSettings, progress: Progress = NO_PROGRESS) -> ExportSummary:
    """Export ``settings.requests`` into one signed bundle at ``settings.output`` (or a set of volumes, or
    standard output); refuse before the first blob without the disk space it may need; KeyboardInterrupt
    becomes Interrupted, after the cleanup."""
    started = time.monotonic()
    output = settings.output
    if not settings.requests:
        raise UsageError("no images to export: give references or --images-file")
    if output == STDOUT and settings.volume_size is not None:
        raise UsageError("--volume-size writes files: it cannot go with --output - (standard output)")
    if output != STDOUT:
        if output.exists() and not settings.force and settings.volume_size is None:
            raise UsageError(f"{output} already exists; pass --force to replace it")
        if not output.parent.is_dir():
            raise UsageError(f"output directory {output.parent} does not exist")
        check_writable(output.parent, "choose another --output")
    remove_dead_leftovers(output if output != STDOUT else stdout_spool_anchor())  # a killed export's files
    cache = BlobStore.cache_at(settings.cache_dir).open() if settings.cache_dir else None
    finishing: list[bool] = []
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
        delta = leave_out(plan, settings.inventory) if settings.inventory is not None else None
        blobs = delta.carried if delta is not None else plan.content_blobs
        created = created_time()
        carried = policy.trusted_root.raw if policy and policy.trusted_root and policy.trusted_root.raw else None
        catalog, index = build_catalog(
            plan, created, verifications, settings.extensions, carried, blobs, delta.required if delta else ()
        )
        job = WriteJob(client, settings, plan, catalog, index, blobs, carried, int(created.timestamp()))
        store = cache or BlobStore.spool_beside(output if output != STDOUT else stdout_spool_anchor())
        try:
            written, transfer, volume_set = job.write(store, progress, finishing)
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
        written=written,
        key_id=key_id(settings.signing_key.public_key()),
        images=len(plan.images),
        platforms=sum(len(i.platforms) or 1 for i in plan.images),
        artifacts=dict(Counter(a.kind for a in plan.artifacts)),
        manifests=len(plan.manifests),
        blobs=len(blobs),
        uncompressed_bytes=catalog.total_size,
        compressed_bytes=sum(w.compressed_size for w in written),
        seconds=time.monotonic() - started,
        per_image=per_image,
        warnings=list(plan.warnings),
        signatures=list(verifications or []),
        cache=store.use if store.cached else None,
        transfer=transfer,
        required_blobs=len(delta.required) if delta else 0,
        required_bytes=delta.saved_bytes if delta else 0,
        volume_set=volume_set,
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
