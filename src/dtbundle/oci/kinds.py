"""What can refer to an image, and how it is found: cosign tags and OCI 1.1 referrers.

The kinds are the catalog's ``kind`` values and the importer's tag kinds; they are
strings on the wire (``cosign.sig``), an enum in code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

from dtbundle.oci.digest import SHA256_HEX_PATTERN


class ArtifactKind(StrEnum):
    """A manifest that refers to an image (or, for IMAGE, the image itself)."""

    IMAGE = "image"
    COSIGN_SIG = "cosign.sig"  # sha256-<hex>.sig tag: cosign simple signing
    COSIGN_ATT = "cosign.att"  # sha256-<hex>.att tag: attestations
    COSIGN_SBOM = "cosign.sbom"  # sha256-<hex>.sbom tag: SBOMs
    REFERRER = "referrer"  # OCI 1.1 manifest with a subject
    REFERRERS_INDEX = "referrers-index"  # the referrers tag schema index (sha256-<hex> tag)

    @property
    def cosign_suffix(self) -> str | None:
        """``.sig`` for COSIGN_SIG, and so on; None for the other kinds."""
        return self.value[len("cosign") :] if self.value.startswith("cosign.") else None


COSIGN_KINDS = (ArtifactKind.COSIGN_SIG, ArtifactKind.COSIGN_ATT, ArtifactKind.COSIGN_SBOM)
# Kinds a catalog may list as artifacts (everything but the image itself).
ARTIFACT_KINDS = frozenset(ArtifactKind) - {ArtifactKind.IMAGE}
# sha256-<hex> (referrers tag schema) and sha256-<hex>.sig/.att/.sbom (cosign): tags that name
# what refers to an image, never an image version.
_ATTACHMENT_TAG = re.compile(rf"sha256-{SHA256_HEX_PATTERN.pattern}(?:\.[a-z]+)?")


def is_attachment_tag(tag: str) -> bool:
    return _ATTACHMENT_TAG.fullmatch(tag) is not None


def attachment_counts(counts: Mapping[ArtifactKind, int]) -> dict[str, int]:
    """``attachmentCounts`` (specs/json-output.md): every kind but IMAGE, zero included; COSIGN_SIG -> cosignSig."""
    words = {kind: kind.name.lower().split("_") for kind in ArtifactKind if kind != ArtifactKind.IMAGE}
    return {w[0] + "".join(x.title() for x in w[1:]): counts.get(kind, 0) for kind, w in words.items()}
