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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dtbundle.discovery import fetch_requested, find_attachments
from dtbundle.errors import NotFoundError, UnsupportedManifestError, UsageError
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
        seen: set[Reference] = set()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="dtbundle-plan") as pool:
            self._pool = pool
            for request in requests:
                if request.ref in seen:
                    continue
                seen.add(request.ref)
                self._add_image(request)
        return self.plan

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
        def fetch(desc: Descriptor) -> Manifest:
            _require_sha256(desc.digest, f"manifest of {source}")
            return self.client.get_manifest(Reference(source.registry, source.repository, None, desc.digest))

        return list(self._pool.map(fetch, descriptors))

    def _add_image(self, request: ImageRequest) -> None:
        ref = request.ref
        top = fetch_requested(self.client, ref)  # a missing tag or repository names the nearest tags
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
            image.dropped_attachments = len(find_attachments(self.client, ref, image.original_digest, fetch=True))
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
        discovered = list(self._pool.map(lambda s: (s, find_attachments(self.client, ref, s, fetch=True)), subjects))
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
                        manifest = self.client.get_manifest(Reference(ref.registry, ref.repository, None, desc.digest))
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
