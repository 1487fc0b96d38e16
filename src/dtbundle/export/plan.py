"""Export planning: walk each image's manifest graph and everything that refers to it.

For every requested image: the top manifest (an index is kept byte for byte
unless a platform filter trims it), each platform manifest, every config and
layer; then, for the index and each platform manifest, what refers to it —
cosign's ``sha256-<hex>.sig/.att/.sbom`` tags and OCI 1.1 referrers (API or
referrers tag schema) — recursively (a signature of an SBOM), to a bounded
depth. Only manifests are fetched here (small, kept in memory); layers are
downloaded by the exporter. The result lists every digest and size, which is
what lets the catalog be written before any layer is downloaded.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dtbundle.discovery import COSIGN_SUFFIXES
from dtbundle.errors import NotFoundError, UnsupportedManifestError, UsageError
from dtbundle.oci import Descriptor, Platform, compute_digest, load_json_object, referrers_tag
from dtbundle.oci.reference import Reference, parse_reference
from dtbundle.registry import Manifest, RegistryClient

MAX_REFERRER_DEPTH = 4
_ATTESTATION_TYPE = "vnd.docker.reference.type"
_ATTESTATION_FOR = "vnd.docker.reference.digest"


@dataclass(frozen=True)
class PlatformFilter:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> PlatformFilter:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: use os/arch or os/arch/variant, e.g. linux/arm64")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, platform: Platform) -> bool:
        return (
            platform.os == self.os
            and platform.architecture == self.architecture
            and (self.variant is None or platform.variant == self.variant)
        )

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class ImageRequest:
    source: str  # as the user wrote it
    ref: Reference
    platforms: tuple[PlatformFilter, ...] = ()
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
    kind: str  # cosign.sig | cosign.att | cosign.sbom | referrer | referrers-index
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


def _require_sha256(digest: str, what: str) -> None:
    if not digest.startswith("sha256:"):
        raise UnsupportedManifestError(
            f"{what} uses {digest.split(':')[0]}; bundle format v1 carries sha256 content only"
        )


def trim_index(manifest: Manifest, filters: Sequence[PlatformFilter]) -> tuple[bytes, list[Descriptor]]:
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
        self._artifact_keys: set[tuple[str, str, str | None]] = set()

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
        missing = [c for c in parsed.manifests if c.digest not in self.plan.manifests]
        for child in self._fetch_all(source, missing):
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
        top = self.client.get_manifest(ref)
        image = PlannedImage(request, top, top.parsed.manifests if top.is_index else ())
        if request.platforms:
            self._apply_filter(image)
        index = len(self.plan.images)
        self.plan.images.append(image)
        self._store_tree(image.manifest, ref)
        if not self.referrers:
            return
        subjects = [image.manifest.digest, *(p.digest for p in image.platforms)]
        if image.original_digest:
            image.dropped_attachments = len(self._discover(ref, image.original_digest))
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
    def _discover(self, ref: Reference, subject: str) -> list[tuple[str, Reference, Descriptor, Manifest | None]]:
        """(kind, source, descriptor, manifest-if-already-fetched) of what refers to ``subject``."""
        found: list[tuple[str, Reference, Descriptor, Manifest | None]] = []
        for suffix in COSIGN_SUFFIXES:
            tagged = Reference(ref.registry, ref.repository, referrers_tag(subject) + suffix)
            try:
                manifest = self.client.get_manifest(tagged)
            except NotFoundError:
                continue
            found.append((f"cosign{suffix}", tagged, manifest.descriptor(), manifest))
        referrers = self.client.list_referrers(ref, subject)
        repo = Reference(ref.registry, ref.repository, None)
        found.extend(("referrer", repo, d, None) for d in referrers.descriptors)
        if referrers.index is not None:
            tag = Reference(ref.registry, ref.repository, referrers_tag(subject))
            found.append(("referrers-index", tag, referrers.index.descriptor(), referrers.index))
        return found

    def _attachments(self, ref: Reference, subjects: list[str], image: int, depth: int) -> None:
        if depth > MAX_REFERRER_DEPTH or not subjects:
            return
        discovered = list(self._pool.map(lambda s: (s, self._discover(ref, s)), subjects))
        next_subjects: list[str] = []
        for subject, items in discovered:
            present: set[str] = set()  # referrers of this subject that are in the plan
            for kind, source, desc, manifest in items:
                key = (kind, desc.digest, source.tag)
                if key in self._artifact_keys:
                    present.add(desc.digest)
                    continue
                if manifest is None and kind == "referrer":
                    try:
                        manifest = self.client.get_manifest(Reference(ref.registry, ref.repository, None, desc.digest))
                    except NotFoundError:
                        self.plan.warnings.append(
                            f"{ref.name}: referrer {desc.digest} of {subject} is listed but missing; skipped"
                        )
                        continue
                if kind == "referrers-index":
                    listed = {d.digest for d in manifest.parsed.manifests} if manifest else set()
                    if not listed <= present:
                        # It lists content we could not fetch: import rebuilds the index instead.
                        continue
                assert manifest is not None
                present.add(desc.digest)
                self._artifact_keys.add(key)
                if kind != "referrers-index":
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
                if kind != "referrers-index":
                    next_subjects.append(manifest.digest)
        self._attachments(ref, next_subjects, image, depth + 1)


# -- requests from the command line and the images file ---------------------------------------------
def requests_from(references: Iterable[str], platforms: Sequence[str] = ()) -> list[ImageRequest]:
    filters = tuple(PlatformFilter.parse(p) for p in platforms)
    return [ImageRequest(text, parse_reference(text), filters) for text in references]


def load_images_file(path: Path, default_platforms: Sequence[str] = ()) -> list[ImageRequest]:
    """Read an images file (TOML); see the README for its format."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"images file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read images file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"images file {path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"images", "image", "platforms"}
    if unknown:
        raise UsageError(f"images file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    top_platforms = document.get("platforms", list(default_platforms))
    if not isinstance(top_platforms, list) or not all(isinstance(p, str) for p in top_platforms):
        raise UsageError(f"images file {path}: 'platforms' must be a list of strings like \"linux/amd64\"")
    requests: list[ImageRequest] = []
    short = document.get("images", [])
    if not isinstance(short, list) or not all(isinstance(r, str) for r in short):
        raise UsageError(f"images file {path}: 'images' must be a list of image references")
    requests.extend(requests_from(short, top_platforms))
    tables = document.get("image", [])
    if not isinstance(tables, list):
        raise UsageError(f"images file {path}: use [[image]] tables")
    for n, table in enumerate(tables, 1):
        if not isinstance(table, dict) or not isinstance(table.get("ref"), str):
            raise UsageError(f'images file {path}: [[image]] number {n} needs ref = "registry/repository:tag"')
        extra = set(table) - {"ref", "platforms"}
        if extra:
            raise UsageError(f"images file {path}: [[image]] number {n} has unknown key(s) {', '.join(sorted(extra))}")
        platforms = table.get("platforms", top_platforms)
        if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            raise UsageError(f"images file {path}: [[image]] number {n}: platforms must be a list of strings")
        requests.extend(requests_from([table["ref"]], platforms))
    if not requests:
        raise UsageError(f"images file {path} names no images")
    return requests
