"""Export planning: walk each image's manifest graph and everything that refers to it.

For every requested image: the top manifest (an index is kept byte for byte
unless a platform filter trims it), each platform manifest, every config and
layer; then, for the index and each platform manifest, what refers to it —
cosign's ``sha256-<hex>.sig/.att/.sbom`` tags and OCI 1.1 referrers (API or
referrers tag schema) — recursively (a signature of an SBOM), to a bounded
depth. Only manifests are fetched here (small, kept in memory), each once however
often it is named (an index may name one child thousands of times); layers are
downloaded by the exporter. The result lists every digest and size, which is
what lets the catalog be written before any layer is downloaded.

Over latency, walking in that order would cost a round trip per step. Every request goes
through one :class:`~dtbundle.discovery.Lookups` (each sent once, at most ``concurrency`` at a
time), which :func:`prefetch` warms first by walking the same graph with every image, and every
probe of every subject (``.sig``/``.att``/``.sbom`` tags, referrers), in flight together; it
builds nothing, and a failure it meets is kept for the planner's walk. That walk stays
sequential and in request order, so the plan (and the bundle's bytes) does not depend on the
order in which answers arrive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from dtbundle.discovery import Lookups, fetch_requested
from dtbundle.errors import DtbundleError, NotFoundError, UnsupportedManifestError, UsageError
from dtbundle.limits import TRUST
from dtbundle.oci import Descriptor, Platform, Reference, compute_digest, load_json_object
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.registry import Manifest, RegistryClient

_ATTESTATION_TYPE = "vnd.docker.reference.type"
_ATTESTATION_FOR = "vnd.docker.reference.digest"


@dataclass(frozen=True)
class ImageRequest:
    source: str  # as the user wrote it
    ref: Reference
    platforms: tuple[Platform, ...] = ()  # filters: keep only matching platforms
    annotations: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StoredManifest:
    manifest: Manifest
    source: Reference  # where its blobs and children live


@dataclass(frozen=True)
class StoredBlob:
    descriptor: Descriptor
    source: Reference


@dataclass
class PlannedImage:
    request: ImageRequest
    manifest: Manifest
    platforms: tuple[Descriptor, ...]
    original_digest: str | None = None
    dropped_attachments: int = 0  # signatures of the original index, which a trim invalidates

    @property
    def ref_name(self) -> str:
        return str(self.request.ref)


@dataclass(frozen=True)
class PlannedArtifact:
    kind: ArtifactKind
    source: Reference  # repository (and tag, for tagged kinds)
    subject: str
    descriptor: Descriptor
    image: int  # index into ExportPlan.images

    @property
    def ref_name(self) -> str | None:
        return str(self.source) if self.source.tag else None


@dataclass
class ExportPlan:
    images: list[PlannedImage] = field(default_factory=list)
    artifacts: list[PlannedArtifact] = field(default_factory=list)
    manifests: dict[str, StoredManifest] = field(default_factory=dict)
    blobs: dict[str, StoredBlob] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def content_blobs(self) -> list[StoredBlob]:
        """The blobs that are not manifests (configs, layers), in plan order: what export downloads."""
        return [b for d, b in self.blobs.items() if d not in self.manifests]


def _require_sha256(digest: str, what: str) -> None:
    if not digest.startswith("sha256:"):
        raise UnsupportedManifestError(
            f"{what} uses {digest.split(':')[0]}; bundle format v1 carries sha256 content only"
        )


def trim_index(manifest: Manifest, filters: Sequence[Platform]) -> tuple[bytes, list[Descriptor]]:
    """A new index holding only matching platforms (and buildx attestations of them)."""
    children = manifest.parsed.manifests
    kept = {c.digest for c in children if c.platform and any(f.matches(c.platform) for f in filters)}
    kept |= {
        c.digest
        for c in children
        if c.annotations.get(_ATTESTATION_TYPE) == "attestation-manifest"
        and c.annotations.get(_ATTESTATION_FOR) in kept
    }
    document = load_json_object(manifest.data, "index")
    document["manifests"] = [m for m in document["manifests"] if m.get("digest") in kept]
    data = json.dumps(document, separators=(",", ":")).encode()
    return data, [c for c in children if c.digest in kept]


class Planner:
    """Builds an :class:`ExportPlan`; fetches manifests only."""

    def __init__(self, client: RegistryClient, *, referrers: bool = True, concurrency: int = 8) -> None:
        self.client = client
        self.referrers = referrers
        self.concurrency = max(1, concurrency)
        self.plan = ExportPlan()
        self._artifact_keys: set[tuple[ArtifactKind, str, str | None]] = set()

    def build(self, requests: Iterable[ImageRequest]) -> ExportPlan:
        first: dict[Reference, ImageRequest] = {}
        for request in requests:
            first.setdefault(request.ref, request)  # a reference named twice is planned once
        unique = list(first.values())
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="dtbundle-plan")
        try:
            self.lookups = Lookups(self.client, pool)
            prefetch(self.lookups, [(r.ref, r.platforms) for r in unique], self.referrers, trim_index)
            for request in unique:
                self._add_image(request)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return self.plan

    def _manifest(self, ref: Reference) -> Manifest:
        return self.lookups.manifest(ref).result()

    # -- manifests and blobs ------------------------------------------------------------------
    def _store_tree(self, manifest: Manifest, source: Reference) -> None:
        """Store ``manifest`` and, recursively, its children and blobs."""
        _require_sha256(manifest.digest, f"manifest {source}")
        if manifest.digest in self.plan.manifests:
            return
        self.plan.manifests[manifest.digest] = StoredManifest(manifest, source)
        parsed = manifest.parsed
        missing = {c.digest: c for c in parsed.manifests if c.digest not in self.plan.manifests}
        for child in self._fetch_all(source, list(missing.values())):
            self._store_tree(child, source)
        for blob in parsed.blobs():
            _require_sha256(blob.digest, f"blob of {source}")
            self.plan.blobs.setdefault(blob.digest, StoredBlob(blob, source))

    def _fetch_all(self, source: Reference, descriptors: Sequence[Descriptor]) -> list[Manifest]:
        for desc in descriptors:
            _require_sha256(desc.digest, f"manifest of {source}")
        refs = [Reference(source.registry, source.repository, None, desc.digest) for desc in descriptors]
        return [future.result() for future in [self.lookups.manifest(ref) for ref in refs]]

    def _add_image(self, request: ImageRequest) -> None:
        ref = request.ref
        top = fetch_requested(self.client, ref, self.lookups)  # a missing tag or repository names the nearest tags
        # An index naming one child many times: the child is one platform, listed once.
        image = PlannedImage(request, top, tuple(dict.fromkeys(top.parsed.manifests)) if top.is_index else ())
        if request.platforms:
            self._apply_filter(image)
        index = len(self.plan.images)
        self.plan.images.append(image)
        self._store_tree(image.manifest, ref)
        if not self.referrers:
            return
        subjects = list(dict.fromkeys([image.manifest.digest, *(p.digest for p in image.platforms)]))
        if image.original_digest:
            image.dropped_attachments = len(self.lookups.attachments(ref, image.original_digest))
        self._attachments(ref, subjects, index, depth=1)

    def _apply_filter(self, image: PlannedImage) -> None:
        filters = image.request.platforms
        wanted = ", ".join(map(str, filters))
        top = image.manifest
        if top.is_index:
            data, kept = trim_index(top, filters)
            if not any(k.platform and k.platform.os != "unknown" for k in kept):
                available = ", ".join(str(c.platform) for c in top.parsed.manifests if c.platform)
                raise UsageError(f"{image.request.source} has no platform matching {wanted} (it has: {available})")
            if len(kept) < len(top.parsed.manifests):
                image.original_digest = top.digest
                image.manifest = Manifest(data, top.media_type, compute_digest(data))
                image.platforms = tuple(kept)
            return
        config = top.parsed.config
        if config is None:
            return
        obj = load_json_object(self.client.get_blob_bytes(image.request.ref, config), "image config")
        platform = Platform.from_json(obj)
        if platform is not None and not any(f.matches(platform) for f in filters):
            raise UsageError(f"{image.request.source} is a single {platform} image, which --platform {wanted} excludes")

    # -- attachments ------------------------------------------------------------------------------
    def _attachments(self, ref: Reference, subjects: list[str], image: int, depth: int) -> None:
        if depth > TRUST.max_referrer_depth or not subjects:
            return
        subjects = list(dict.fromkeys(subjects))  # each subject's attachments are looked up once
        for subject in subjects:
            self.lookups.probe(ref, subject)  # all in flight before the first answer is used
        discovered = [(subject, self.lookups.attachments(ref, subject)) for subject in subjects]
        next_subjects: list[str] = []
        for subject, items in discovered:
            present: set[str] = set()  # referrers of this subject that are in the plan
            for item in items:
                kind, source, desc, manifest = item.kind, item.source, item.descriptor, item.manifest
                key = (kind, desc.digest, source.tag)
                if key in self._artifact_keys:
                    present.add(desc.digest)
                    continue
                if manifest is None and kind == ArtifactKind.REFERRER:
                    try:
                        manifest = self._manifest(Reference(ref.registry, ref.repository, None, desc.digest))
                    except NotFoundError:
                        self.plan.warnings.append(
                            f"{ref.name}: referrer {desc.digest} of {subject} is listed but missing; skipped"
                        )
                        continue
                if kind == ArtifactKind.REFERRERS_INDEX:
                    listed = {d.digest for d in manifest.parsed.manifests} if manifest else set()
                    if not listed <= present:
                        # It lists content we could not fetch: import rebuilds the index instead.
                        continue
                assert manifest is not None
                present.add(desc.digest)
                self._artifact_keys.add(key)
                if kind != ArtifactKind.REFERRERS_INDEX:
                    self._store_tree(manifest, source)
                else:
                    _require_sha256(manifest.digest, f"referrers index of {ref.name}")
                    self.plan.manifests.setdefault(manifest.digest, StoredManifest(manifest, source))
                descriptor = Descriptor(
                    manifest.media_type,
                    manifest.digest,
                    manifest.size,
                    artifact_type=desc.artifact_type or manifest.parsed.artifact_type,
                )
                self.plan.artifacts.append(PlannedArtifact(kind, source, subject, descriptor, image))
                if kind != ArtifactKind.REFERRERS_INDEX:
                    next_subjects.append(manifest.digest)
        self._attachments(ref, next_subjects, image, depth + 1)


# -- prefetch: the same walk, everything in flight at once ----------------------------------------
_WALKERS = 64  # threads that wait for answers (requests are bounded by the lookups' pool)
Trim = Callable[[Manifest, Sequence[Platform]], tuple[bytes, list[Descriptor]]]


def prefetch(
    lookups: Lookups, images: Sequence[tuple[Reference, Sequence[Platform]]], referrers: bool, trim: Trim
) -> None:
    """Warm ``lookups`` with what planning ``images`` (reference, platform filters) will ask for;
    ``trim`` is the planner's index trimming (a trimmed index's subjects are probed too)."""
    if not images:
        return
    walkers = ThreadPoolExecutor(min(_WALKERS, len(images)), thread_name_prefix="dtbundle-walk")
    try:
        for future in [walkers.submit(_image, lookups, ref, filters, referrers, trim) for ref, filters in images]:
            future.result()
    finally:
        walkers.shutdown(wait=True, cancel_futures=True)


def _image(lookups: Lookups, ref: Reference, filters: Sequence[Platform], referrers: bool, trim: Trim) -> None:
    top = _get(lookups.manifest(ref))
    if top is None:
        return
    subjects = [top.digest]
    children = list(dict.fromkeys(top.parsed.manifests)) if top.is_index else []
    if filters and top.is_index:
        try:
            data, kept = trim(top, filters)
        except DtbundleError:
            return
        if len(kept) < len(children):  # a new index: its platforms, and the original's attachments counted
            subjects, children = [compute_digest(data)], kept
            if referrers:
                lookups.probe(ref, top.digest)
    futures = [lookups.manifest(Reference(ref.registry, ref.repository, None, c.digest)) for c in children]
    _trees(lookups, ref, [m for m in map(_get, futures) if m is not None])
    if referrers:
        _attachments(lookups, ref, [*subjects, *(c.digest for c in children)])


def _trees(lookups: Lookups, source: Reference, manifests: list[Manifest]) -> None:
    """Every manifest below ``manifests`` (an index's children, level by level)."""
    while manifests:
        futures = [
            lookups.manifest(Reference(source.registry, source.repository, None, child.digest))
            for manifest in manifests
            for child in manifest.parsed.manifests
        ]
        manifests = [m for m in map(_get, futures) if m is not None]


def _attachments(lookups: Lookups, ref: Reference, subjects: list[str]) -> None:
    for _ in range(TRUST.max_referrer_depth):
        subjects = list(dict.fromkeys(subjects))
        if not subjects:
            return
        for subject in subjects:
            lookups.probe(ref, subject)
        found: list[Future[Manifest] | Manifest] = []
        for subject in subjects:
            try:
                items = lookups.attachments(ref, subject)
            except DtbundleError:
                continue
            for item in items:
                if item.kind == ArtifactKind.REFERRERS_INDEX:
                    continue
                if item.manifest is not None:
                    found.append(item.manifest)
                else:
                    by_digest = Reference(ref.registry, ref.repository, None, item.descriptor.digest)
                    found.append(lookups.manifest(by_digest))
        manifests = [m for m in (x if isinstance(x, Manifest) else _get(x) for x in found) if m is not None]
        _trees(lookups, ref, manifests)
        subjects = [m.digest for m in manifests]


def _get(future: Future[Manifest]) -> Manifest | None:
    try:
        return future.result()
    except DtbundleError:
        return None
