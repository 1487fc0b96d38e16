"""The catalog of an export plan (pure): every file in bundle order, images, artifacts, extensions.

Written before the first blob is downloaded: the plan already knows every digest and size.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from dtbundle import __version__
from dtbundle.bundle.format import (
    INDEX_NAME,
    LAYOUT_NAME,
    Catalog,
    CatalogArtifact,
    CatalogFile,
    CatalogImage,
    CatalogPlatform,
    CatalogRequired,
    format_time,
)
from dtbundle.bundle.layout import OCI_LAYOUT_BYTES, catalog_index
from dtbundle.export.plan import ExportPlan, StoredBlob
from dtbundle.oci import blob_path, sha256_digest, sha256_hex
from dtbundle.trust.evaluate import ImageVerification
from dtbundle.verify import trusted_root_extension


def build_catalog(
    plan: ExportPlan,
    created: datetime.datetime,
    verifications: Sequence[ImageVerification] | None = None,
    extensions: dict[str, Any] | None = None,
    trusted_root: bytes | None = None,
    blobs: Sequence[StoredBlob] | None = None,
    required: tuple[CatalogRequired, ...] = (),
) -> tuple[Catalog, bytes]:
    """The catalog and the ``index.json`` bytes for ``plan`` (pure); ``trusted_root``: carried, the last file;
    ``blobs``: the content blobs carried (default: all the plan's), ``required``: those left out (a delta)."""
    blobs = plan.content_blobs if blobs is None else blobs
    images = tuple(
        CatalogImage(
            source=i.request.source,
            registry=i.request.ref.registry,
            repository=i.request.ref.repository,
            tag=i.request.ref.tag,
            digest=i.manifest.digest,
            media_type=i.manifest.media_type,
            size=i.manifest.size,
            ref_name=i.ref_name,
            platforms=tuple(
                CatalogPlatform(str(p.platform) if p.platform else None, p.digest, p.media_type, p.size)
                for p in i.platforms
            ),
            original_digest=i.original_digest,
            annotations=dict(i.request.annotations),
            verification=verifications[n].to_json() if verifications else None,
        )
        for n, i in enumerate(plan.images)
    )
    artifacts = tuple(
        CatalogArtifact(
            kind=a.kind,
            registry=a.source.registry,
            repository=a.source.repository,
            subject=a.subject,
            digest=a.descriptor.digest,
            media_type=a.descriptor.media_type,
            size=a.descriptor.size,
            tag=a.source.tag,
            artifact_type=a.descriptor.artifact_type,
            ref_name=a.ref_name,
        )
        for a in plan.artifacts
    )
    index = catalog_index(images, artifacts)
    files = [
        CatalogFile(LAYOUT_NAME, len(OCI_LAYOUT_BYTES), sha256_hex(OCI_LAYOUT_BYTES)),
        CatalogFile(INDEX_NAME, len(index), sha256_hex(index)),
    ]
    files += [CatalogFile(blob_path(d), m.manifest.size, d.split(":", 1)[1]) for d, m in plan.manifests.items()]
    files += [CatalogFile(blob_path(b.descriptor.digest), b.descriptor.size, b.descriptor.digest[7:]) for b in blobs]
    if trusted_root is not None:
        extensions = {**(extensions or {}), **trusted_root_extension(trusted_root)}
        carried = {b.descriptor.digest for b in blobs}
        if (root_file := carried_root_file(plan, trusted_root, carried)) is not None:
            files.append(root_file)
    catalog = Catalog(
        format_time(created), __version__, images, artifacts, tuple(files), dict(extensions or {}), required
    )
    return catalog, index


def carried_root_file(plan: ExportPlan, trusted_root: bytes, carried: set[str]) -> CatalogFile | None:
    """The carried trusted root as the bundle's last file, or None when a manifest or a carried blob
    already holds those very bytes (content-addressed: it is then carried once, as that file)."""
    digest = sha256_digest(trusted_root)
    if digest in plan.manifests or digest in carried:
        return None
    return CatalogFile(blob_path(digest), len(trusted_root), digest.split(":", 1)[1])
