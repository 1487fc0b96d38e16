"""Discovery: what refers to an image, and image resolution for ``dtbundle resolve``.

One routine finds every attachment of a subject digest: cosign's
``sha256-<hex>.sig/.att/.sbom`` tags and OCI 1.1 referrers (API, or the referrers tag
schema, whose index is itself an attachment). ``resolve`` asks for descriptors only
(HEAD requests); export planning asks for the manifests too, since it carries them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dtbundle.errors import NotFoundError
from dtbundle.oci import Descriptor, Reference, referrers_tag
from dtbundle.oci.kinds import COSIGN_KINDS, ArtifactKind
from dtbundle.registry import Manifest, RegistryClient


@dataclass(frozen=True)
class Attachment:
    """Something that refers to ``subject``: a cosign tag, an OCI 1.1 referrer, or the referrers index."""

    kind: ArtifactKind
    subject: str
    source: Reference  # its repository, with the tag for tagged kinds
    descriptor: Descriptor
    found_via: str  # "tag", "api" or "tag-schema"
    manifest: Manifest | None = None  # when fetched

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "subject": self.subject,
            "digest": self.descriptor.digest,
            "mediaType": self.descriptor.media_type,
            "artifactType": self.descriptor.artifact_type,
            "foundVia": self.found_via,
        }


def find_attachments(client: RegistryClient, ref: Reference, subject: str, *, fetch: bool) -> list[Attachment]:
    """Attachments of ``subject`` in ``ref``'s repository; with ``fetch``, cosign tags' manifests too."""
    found: list[Attachment] = []
    for kind in COSIGN_KINDS:
        tagged = Reference(ref.registry, ref.repository, referrers_tag(subject) + str(kind.cosign_suffix))
        if fetch:
            try:
                manifest: Manifest | None = client.get_manifest(tagged)
            except NotFoundError:
                continue
            assert manifest is not None
            found.append(Attachment(kind, subject, tagged, manifest.descriptor(), "tag", manifest))
        else:
            desc = client.head_manifest(tagged)
            if desc is not None:
                found.append(Attachment(kind, subject, tagged, desc, "tag"))
    referrers = client.list_referrers(ref, subject)
    repo = Reference(ref.registry, ref.repository)
    found.extend(Attachment(ArtifactKind.REFERRER, subject, repo, d, referrers.source) for d in referrers.descriptors)
    if referrers.index is not None:
        tag = Reference(ref.registry, ref.repository, referrers_tag(subject))
        index = referrers.index
        found.append(Attachment(ArtifactKind.REFERRERS_INDEX, subject, tag, index.descriptor(), "tag-schema", index))
    return found


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


def resolve_image(client: RegistryClient, ref: Reference, *, attachments: bool = True) -> ResolvedImage:
    manifest = client.get_manifest(ref)
    platforms = manifest.parsed.manifests if manifest.is_index else ()
    found: list[Attachment] = []
    if attachments:
        for digest in [manifest.digest, *(p.digest for p in platforms)]:
            # The referrers tag schema index is how referrers were found, not one of them.
            found += [
                a for a in find_attachments(client, ref, digest, fetch=False) if a.kind != ArtifactKind.REFERRERS_INDEX
            ]
    return ResolvedImage(ref, manifest.digest, manifest.media_type, manifest.size, tuple(platforms), tuple(found))


def resolve_all(client: RegistryClient, refs: Iterable[Reference], *, attachments: bool = True) -> list[ResolvedImage]:
    return [resolve_image(client, ref, attachments=attachments) for ref in refs]
