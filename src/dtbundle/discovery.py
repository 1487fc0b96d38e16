"""Discovery: what refers to an image, and image resolution for ``dtbundle resolve``.

One routine finds every attachment of a subject digest: cosign's
``sha256-<hex>.sig/.att/.sbom`` tags and OCI 1.1 referrers (API, or the referrers tag
schema, whose index is itself an attachment). ``resolve`` asks for descriptors only
(HEAD requests); export planning asks for the manifests too, since it carries them.

Both fetch what the user asked for through :func:`fetch_requested`: a tag, digest or
repository the registry does not have is a usage error naming the nearest tags it does have.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dtbundle.errors import DtbundleError, NotFoundError, ReferenceNotFoundError
from dtbundle.oci import Descriptor, Reference, referrers_tag
from dtbundle.oci.kinds import COSIGN_KINDS, ArtifactKind, is_attachment_tag
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
            "reference": str(self.source),
            "digest": self.descriptor.digest,
            "mediaType": self.descriptor.media_type,
            "artifactType": self.descriptor.artifact_type,
            "sizeBytes": self.descriptor.size,
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
            "sizeBytes": self.size,
            "platforms": [
                {
                    "platform": str(p.platform) if p.platform else None,
                    "digest": p.digest,
                    "mediaType": p.media_type,
                    "sizeBytes": p.size,
                }
                for p in self.platforms
            ],
            "attachments": [a.to_json() for a in self.attachments],
        }


def resolve_image(client: RegistryClient, ref: Reference, *, attachments: bool = True) -> ResolvedImage:
    manifest = fetch_requested(client, ref)
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


# -- a reference that does not exist ---------------------------------------------------------------------
SUGGESTED_TAGS = 3
_SIMILARITY_CUTOFF = 0.6  # difflib's default for get_close_matches
_VERSION_LIKE = re.compile(r"v?[0-9]+(?:[._-][0-9A-Za-z]+)*")


def fetch_requested(client: RegistryClient, ref: Reference) -> Manifest:
    """The manifest the user asked for; one the registry lacks is a :class:`ReferenceNotFoundError`."""
    try:
        return client.get_manifest(ref)
    except NotFoundError:
        raise missing_reference(client, ref) from None


def missing_reference(client: RegistryClient, ref: Reference) -> ReferenceNotFoundError:
    """Say that ``ref`` does not exist, with the nearest tags of its repository (one bounded tag listing)."""
    try:
        tags = client.list_tags(ref)
    except NotFoundError:
        return ReferenceNotFoundError(
            f"{ref} does not exist: registry {ref.registry} has no repository {ref.repository}; "
            "check the repository name"
        )
    except DtbundleError:
        return ReferenceNotFoundError(f"{ref} does not exist (its repository's tags could not be listed)")
    return ReferenceNotFoundError(f"{ref} does not exist; {tag_hint(ref.tag if not ref.digest else None, tags)}")


def tag_hint(wanted: str | None, tags: Iterable[str], count: int = SUGGESTED_TAGS) -> str:
    """'tags nearby: …' (the closest to ``wanted``), else 'newest tags: …', else 'the repository has no tags'."""
    candidates = sorted({t for t in tags if not is_attachment_tag(t)}, key=_natural)
    if not candidates:
        return "the repository has no tags"
    if wanted:
        matcher = difflib.SequenceMatcher(b=wanted, autojunk=False)
        scored: list[tuple[float, str]] = []
        for tag in candidates:
            matcher.set_seq1(tag)
            prefix = tag.startswith(wanted) or wanted.startswith(tag)  # '1.305.57' is near '1.305.57.20250115-…'
            if prefix or (
                matcher.real_quick_ratio() >= _SIMILARITY_CUTOFF and matcher.quick_ratio() >= _SIMILARITY_CUTOFF
            ):
                score = matcher.ratio()
                if prefix or score >= _SIMILARITY_CUTOFF:
                    scored.append((score, tag))
        if scored:
            scored.sort(key=lambda item: (-item[0], _natural(item[1])))
            return "tags nearby: " + ", ".join(tag for _, tag in scored[:count])
    versions = [t for t in candidates if _VERSION_LIKE.fullmatch(t)] or candidates
    return "newest tags: " + ", ".join(sorted(versions, key=_natural, reverse=True)[:count])


def _natural(tag: str) -> tuple[tuple[int, int, str], ...]:
    """Order tags as versions: numbers by value ('v1.10' after 'v1.9'), the rest as text ('v01' vs 'v1': as text)."""
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"([0-9]+)", tag) if p)
    return (*parts, (-1, 0, tag))  # a shorter tag first (v1 < v1.0), then the text
