"""Resolve image references to digests, platforms and what refers to them.

This is the discovery step export builds on, and the library behind
``dtbundle resolve``: for each reference, the manifest digest and media type,
each platform manifest of an index, and every attachment found for the index
and each platform manifest: cosign's ``sha256-<hex>.sig/.att/.sbom`` tags and
OCI 1.1 referrers (API or referrers tag schema).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dtbundle.oci import Descriptor, referrers_tag
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")


@dataclass(frozen=True)
class Attachment:
    """Something that refers to ``subject``: a cosign tag or an OCI 1.1 referrer."""

    kind: str  # "cosign.sig", "cosign.att", "cosign.sbom" or "referrer"
    subject: str
    descriptor: Descriptor
    found_via: str  # "tag", "api" or "tag-schema"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "digest": self.descriptor.digest,
            "mediaType": self.descriptor.media_type,
            "artifactType": self.descriptor.artifact_type,
            "foundVia": self.found_via,
        }


@dataclass(frozen=True)
class ResolvedImage:
    reference: Reference
    digest: str
    media_type: str
    size: int
    platforms: tuple[Descriptor, ...] = ()
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)

    @property
    def pinned(self) -> Reference:
        return self.reference.with_digest(self.digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "pinned": str(self.pinned),
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "platforms": [
                {
                    "platform": str(p.platform) if p.platform else None,
                    "digest": p.digest,
                    "mediaType": p.media_type,
                    "size": p.size,
                }
                for p in self.platforms
            ],
            "attachments": [a.to_json() for a in self.attachments],
        }


def find_attachments(client: RegistryClient, ref: Reference, digest: str) -> list[Attachment]:
    """cosign tags and OCI referrers of ``digest`` in ``ref``'s repository."""
    found: list[Attachment] = []
    for suffix in COSIGN_SUFFIXES:
        tag_ref = Reference(ref.registry, ref.repository, referrers_tag(digest) + suffix)
        desc = client.head_manifest(tag_ref)
        if desc is not None:
            found.append(Attachment(f"cosign{suffix}", digest, desc, "tag"))
    referrers = client.list_referrers(ref, digest)
    found.extend(Attachment("referrer", digest, d, referrers.source) for d in referrers.descriptors)
    return found


def resolve_image(client: RegistryClient, ref: Reference, *, attachments: bool = True) -> ResolvedImage:
    manifest = client.get_manifest(ref)
    platforms = manifest.parsed.manifests if manifest.is_index else ()
    found: list[Attachment] = []
    if attachments:
        for digest in [manifest.digest, *(p.digest for p in platforms)]:
            found.extend(find_attachments(client, ref, digest))
    return ResolvedImage(ref, manifest.digest, manifest.media_type, manifest.size, tuple(platforms), tuple(found))


def resolve_all(client: RegistryClient, refs: Iterable[Reference], *, attachments: bool = True) -> list[ResolvedImage]:
    return [resolve_image(client, ref, attachments=attachments) for ref in refs]
