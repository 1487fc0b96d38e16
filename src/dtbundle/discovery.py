"""Discovery: what refers to an image, and image resolution for ``dtbundle resolve``.

One routine finds every attachment of a subject digest: cosign's
``sha256-<hex>.sig/.att/.sbom`` tags and OCI 1.1 referrers (API, or the referrers tag
schema, whose index is itself an attachment). ``resolve`` asks for descriptors only
(HEAD requests); export planning asks for the manifests too, since it carries them, through
:class:`Lookups`: each repository's tags are listed once, so only the cosign and referrers tags
that exist are fetched (the referrers API is asked where the registry has it), every image's
lookups in flight together on a bounded pool, each request sent once per run however often it is
asked for (its answer, or its failure, is kept).

Both fetch what the user asked for through :func:`fetch_requested`: a tag, digest or
repository the registry does not have is a usage error naming the nearest tags it does have.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from dtbundle.errors import DtbundleError, NotFoundError, ReferenceNotFoundError
from dtbundle.oci import Descriptor, Reference, referrers_tag
from dtbundle.oci.kinds import COSIGN_KINDS, ArtifactKind, is_attachment_tag
from dtbundle.registry import Manifest, Referrers, RegistryClient


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


def cosign_tag(ref: Reference, subject: str, kind: ArtifactKind) -> Reference:
    """Where cosign keeps ``kind`` (signature, attestation, SBOM) of ``subject``: ``sha256-<hex>.sig`` etc."""
    return Reference(ref.registry, ref.repository, referrers_tag(subject) + str(kind.cosign_suffix))


def find_attachments(client: RegistryClient, ref: Reference, subject: str, *, fetch: bool) -> list[Attachment]:
    """Attachments of ``subject`` in ``ref``'s repository; with ``fetch``, cosign tags' manifests too."""
    found: list[Attachment] = []
    for kind in COSIGN_KINDS:
        tagged = cosign_tag(ref, subject, kind)
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
    return found + _referrer_attachments(ref, subject, client.list_referrers(ref, subject))


def _referrer_attachments(ref: Reference, subject: str, referrers: Referrers) -> list[Attachment]:
    repo = Reference(ref.registry, ref.repository)
    found = [Attachment(ArtifactKind.REFERRER, subject, repo, d, referrers.source) for d in referrers.descriptors]
    if referrers.index is not None:
        tag = Reference(ref.registry, ref.repository, referrers_tag(subject))
        index = referrers.index
        found.append(Attachment(ArtifactKind.REFERRERS_INDEX, subject, tag, index.descriptor(), "tag-schema", index))
    return found


class Lookups:
    """Registry reads for export planning, as futures on ``pool``: each request is sent once per run
    (its answer or its failure is kept and shared by every thread that asks). Tasks on the pool
    never wait for other tasks, so callers may wait on any of them from other threads.

    A repository's tags are listed once: its cosign and referrers tags are then known, and only
    those that exist are fetched, instead of probing three or four tags per subject (a repository
    the registry will not list is probed tag by tag, as :func:`find_attachments` does)."""

    def __init__(self, client: RegistryClient, pool: Executor) -> None:
        self.client, self._pool = client, pool
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, str, str, str], Future[Any]] = {}
        self._waiting: dict[tuple[str, str], list[str]] = {}  # subjects probed before their tags were listed
        self._scouts: dict[str, Future[Referrers]] = {}  # per registry: the request that learns if it has the API
        self.sent = 0  # distinct requests (for tests)

    def _once(self, key: tuple[str, str, str, str], call: Callable[[], Any]) -> Future[Any]:
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                future = self._futures[key] = self._pool.submit(call)
                self.sent += 1
        return future

    def manifest(self, ref: Reference) -> Future[Manifest]:
        """The manifest of ``ref`` (by digest when it has one, else by tag)."""
        identifier = ref.digest or ref.tag or ""
        return self._once(("manifest", ref.registry, ref.repository, identifier), lambda: self.client.get_manifest(ref))

    def referrers(self, ref: Reference, subject: str) -> Future[Referrers]:
        """``list_referrers`` of ``subject`` in ``ref``'s repository (API, else the referrers tag)."""
        key = ("referrers", ref.registry, ref.repository, subject)
        return self._once(key, lambda: self.client.list_referrers(ref, subject))

    def tags(self, ref: Reference) -> Future[frozenset[str] | None]:
        """The attachment tags of ``ref``'s repository, or None when the registry will not list them.
        Subjects probed meanwhile have their lookups started as soon as the list is in."""
        repo = (ref.registry, ref.repository)

        def listed() -> frozenset[str] | None:
            try:
                names = frozenset(t for t in self.client.list_tags(Reference(*repo)) if is_attachment_tag(t))
            except DtbundleError:
                names = None
            with self._lock:
                waiting = self._waiting.pop(repo, [])
            for subject in waiting:  # starting requests never waits: allowed in a pool task
                self._start(ref, subject, names)
            return names

        return self._once(("tags", *repo, ""), listed)

    def probe(self, ref: Reference, subject: str) -> None:
        """Start every lookup of ``subject``'s attachments (cosign tags, referrers) without waiting."""
        listing = self.tags(ref)
        with self._lock:
            if not listing.done():
                self._waiting.setdefault((ref.registry, ref.repository), []).append(subject)
                return
        self._start(ref, subject, listing.result())

    def _start(self, ref: Reference, subject: str, tags: frozenset[str] | None) -> None:
        for tagged in self._cosign_tags(ref, subject, tags):
            self.manifest(tagged)
        with self._lock:
            scout = self._scouts.get(ref.registry)
        if tags is None or (scout is not None and scout.done() and self._may_have_referrers(ref, subject, tags)):
            self.referrers(ref, subject)
        elif scout is None:  # the first subject asks the referrers API; the others wait for its answer
            first = self.referrers(ref, subject)
            with self._lock:
                self._scouts.setdefault(ref.registry, first)

    @staticmethod
    def _cosign_tags(ref: Reference, subject: str, tags: frozenset[str] | None) -> list[Reference]:
        wanted = [cosign_tag(ref, subject, kind) for kind in COSIGN_KINDS]
        return [t for t in wanted if tags is None or t.tag in tags]

    def _may_have_referrers(self, ref: Reference, subject: str, tags: frozenset[str] | None) -> bool:
        # Without the referrers API, only the referrers tag can list them: known from the tag list.
        return tags is None or not self.client.lacks_referrers_api(ref.registry) or referrers_tag(subject) in tags

    def attachments(self, ref: Reference, subject: str) -> list[Attachment]:
        """What :func:`find_attachments` with ``fetch`` finds, from these lookups."""
        self.probe(ref, subject)
        tags = self.tags(ref).result()
        self._start(ref, subject, tags)  # (again: a no-op for lookups already started)
        found: list[Attachment] = []
        for kind, tagged in ((k, cosign_tag(ref, subject, k)) for k in COSIGN_KINDS):
            if tags is not None and tagged.tag not in tags:
                continue
            try:
                manifest = self.manifest(tagged).result()
            except NotFoundError:
                continue
            found.append(Attachment(kind, subject, tagged, manifest.descriptor(), "tag", manifest))
        with self._lock:
            scout = self._scouts.get(ref.registry)
        if scout is not None:
            with contextlib.suppress(DtbundleError):
                scout.result()  # now the registry is known to have the referrers API, or not
        if not self._may_have_referrers(ref, subject, tags):
            return found
        return found + _referrer_attachments(ref, subject, self.referrers(ref, subject).result())


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


def fetch_requested(client: RegistryClient, ref: Reference, lookups: Lookups | None = None) -> Manifest:
    """The manifest the user asked for; one the registry lacks is a :class:`ReferenceNotFoundError`."""
    try:
        return lookups.manifest(ref).result() if lookups else client.get_manifest(ref)
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
