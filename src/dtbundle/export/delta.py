"""A delta bundle (pure): the blobs an inventory of the target says it holds are left out.

The catalog lists each left-out blob as *required at the target*, with its digest, size and
the repositories the inventory saw it in (import checks it is there, mounting it from one of
them where needed, before it tags anything). Manifests are always carried (import plans from
them), and so is every blob an attachment uses (signature payloads, attestations, SBOMs): an
image-signature policy reads them from the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dtbundle.bundle.format import CatalogRequired
from dtbundle.export.plan import ExportPlan, StoredBlob
from dtbundle.limits import MAX_REQUIRED_HINTS
from dtbundle.oci import parse_manifest


@dataclass(frozen=True)
class Delta:
    """What an inventory changed: the blobs still carried and those left out."""

    carried: list[StoredBlob]
    required: tuple[CatalogRequired, ...]

    @property
    def saved_bytes(self) -> int:
        return sum(r.size for r in self.required)


def attachment_blobs(plan: ExportPlan) -> frozenset[str]:
    """Digests of the blobs that artifact manifests (signatures, attestations, SBOMs, referrers) use."""
    used: set[str] = set()
    pending = [a.descriptor.digest for a in plan.artifacts]
    seen: set[str] = set()
    while pending:  # an artifact may be an index: its child manifests' blobs are the attachment's too
        digest = pending.pop()
        stored = plan.manifests.get(digest)
        if stored is None or digest in seen:
            continue
        seen.add(digest)
        manifest = parse_manifest(stored.manifest.data, stored.manifest.media_type)
        used.update(b.digest for b in manifest.blobs())
        pending.extend(c.digest for c in manifest.manifests)
    return frozenset(used)


def leave_out(plan: ExportPlan, held: Mapping[str, tuple[int, tuple[str, ...]]]) -> Delta:
    """Split ``plan``'s content blobs into carried and required, by ``held`` (digest -> size,
    repositories; an inventory's :meth:`~dtbundle.inventory.Inventory.blob_locations`)."""
    keep = attachment_blobs(plan)
    carried: list[StoredBlob] = []
    required: list[CatalogRequired] = []
    for blob in plan.content_blobs:
        desc = blob.descriptor
        found = held.get(desc.digest)
        # The size is the descriptor's: an inventory entry of another size is not the same blob.
        if found is None or found[0] != desc.size or desc.digest in keep:
            carried.append(blob)
            continue
        required.append(CatalogRequired(desc.digest, desc.size, tuple(sorted(found[1]))[:MAX_REQUIRED_HINTS]))
    return Delta(carried, tuple(required))
