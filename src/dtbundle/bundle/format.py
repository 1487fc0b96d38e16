"""The bundle catalog (``dtbundle.json``): model, serialisation and strict validation.

Pure code: bytes in, a validated :class:`Catalog` out (or an IntegrityError that
names the first problem). A reader trusts nothing in a catalog before its
signature verified, and even then validates every name, size and digest,
because import turns these values into registry paths and tags.
See ``specs/bundle-format.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from dtbundle.errors import IntegrityError, InvalidReferenceError
from dtbundle.limits import BundleLimits
from dtbundle.oci import MANIFEST_TYPES
from dtbundle.oci.digest import SHA256_HEX_PATTERN, SHA256_PATTERN
from dtbundle.oci.reference import Reference, parse_reference

FORMAT_VERSION = 1
CATALOG_NAME = "dtbundle.json"
SIGNATURE_NAME = "dtbundle.json.sig"
LAYOUT_NAME = "oci-layout"
INDEX_NAME = "index.json"
# Image annotations dtbundle itself understands (written by export, read by import):
TARGET_REPOSITORY_ANNOTATION = "dev.dtbundle.repository"  # private repository name at the target
UNSIGNED_ANNOTATION = "dev.dtbundle.unsigned"  # why the image has no signature, by design
ARTIFACT_KINDS = frozenset({"cosign.sig", "cosign.att", "cosign.sbom", "referrer", "referrers-index"})
_FILE_PATH = re.compile(r"(oci-layout|index\.json|blobs/sha256/[0-9a-f]{64})")


@dataclass(frozen=True)
class CatalogFile:
    path: str
    size: int
    sha256: str  # hex

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass(frozen=True)
class CatalogPlatform:
    platform: str | None
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class CatalogImage:
    source: str  # the reference as the user gave it
    registry: str
    repository: str
    tag: str | None
    digest: str
    media_type: str
    size: int
    ref_name: str  # org.opencontainers.image.ref.name of its index.json entry
    platforms: tuple[CatalogPlatform, ...] = ()
    original_digest: str | None = None  # set when --platform trimmed the index
    annotations: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] | None = None  # signature verification done at export

    @property
    def reference(self) -> Reference:
        return Reference(self.registry, self.repository, self.tag, self.digest)


@dataclass(frozen=True)
class CatalogArtifact:
    kind: str
    registry: str
    repository: str
    subject: str
    digest: str
    media_type: str
    size: int
    tag: str | None = None
    artifact_type: str | None = None
    ref_name: str | None = None


@dataclass(frozen=True)
class Catalog:
    created: str
    tool_version: str
    images: tuple[CatalogImage, ...]
    artifacts: tuple[CatalogArtifact, ...]
    files: tuple[CatalogFile, ...]
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "formatVersion": FORMAT_VERSION,
            "created": self.created,
            "tool": {"name": "dtbundle", "version": self.tool_version},
            "images": [_image_json(i) for i in self.images],
            "artifacts": [_artifact_json(a) for a in self.artifacts],
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "totalSize": self.total_size,
            **({"extensions": self.extensions} if self.extensions else {}),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=True) + "\n").encode()


def _image_json(i: CatalogImage) -> dict[str, Any]:
    return {
        "source": i.source,
        "registry": i.registry,
        "repository": i.repository,
        "tag": i.tag,
        "digest": i.digest,
        "mediaType": i.media_type,
        "size": i.size,
        "refName": i.ref_name,
        "platforms": [
            {"platform": p.platform, "digest": p.digest, "mediaType": p.media_type, "size": p.size} for p in i.platforms
        ],
        "originalDigest": i.original_digest,
        "annotations": dict(i.annotations),
        **({"verification": i.verification} if i.verification is not None else {}),
    }


def _artifact_json(a: CatalogArtifact) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "registry": a.registry,
        "repository": a.repository,
        "tag": a.tag,
        "subject": a.subject,
        "digest": a.digest,
        "mediaType": a.media_type,
        "size": a.size,
        "artifactType": a.artifact_type,
        "refName": a.ref_name,
    }


# -- parsing ------------------------------------------------------------------------------------
class _Invalid(Exception):
    pass


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _Invalid(f"{where}.{key} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _size(obj: dict[str, Any], where: str, limit: int) -> int:
    size = _get(obj, "size", int, where)
    if size < 0 or size > limit:
        raise _Invalid(f"{where}.size {size} is outside 0..{limit}")
    return int(size)


def _digest(obj: dict[str, Any], key: str, where: str, optional: bool = False) -> Any:
    value = _get(obj, key, str, where, optional)
    if value is not None and not SHA256_PATTERN.fullmatch(value):
        raise _Invalid(f"{where}.{key} is not a sha256 digest")
    return value


def _name(registry: str, repository: str, tag: str | None, where: str) -> None:
    text = f"{registry}/{repository}" + (f":{tag}" if tag else "")
    try:
        ref = parse_reference(text, default_tag=None)
    except InvalidReferenceError:
        raise _Invalid(f"{where} names an invalid registry, repository or tag") from None
    if (ref.registry, ref.repository, ref.tag) != (registry, repository, tag):
        raise _Invalid(f"{where} names a registry/repository that is not in canonical form")


def parse_catalog(data: bytes, limits: BundleLimits) -> Catalog:
    """Validate and parse catalog bytes; raise IntegrityError naming the first problem."""
    if len(data) > limits.max_catalog_bytes:
        raise IntegrityError(f"bundle catalog is larger than {limits.max_catalog_bytes} bytes")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError("bundle catalog is not valid JSON: the bundle is corrupt") from None
    if not isinstance(obj, dict):
        raise IntegrityError("bundle catalog is not a JSON object")
    version = obj.get("formatVersion")
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"bundle format version {version!r} is not supported by this dtbundle "
            f"(it reads version {FORMAT_VERSION}); use the dtbundle release that wrote the bundle"
        )
    try:
        return _parse(obj, limits)
    except _Invalid as exc:
        raise IntegrityError(f"bundle catalog is invalid: {exc}") from None


def _parse(obj: dict[str, Any], limits: BundleLimits) -> Catalog:
    files_json = _get(obj, "files", list, "catalog")
    if len(files_json) > limits.max_files:
        raise _Invalid(f"more than {limits.max_files} files")
    files: list[CatalogFile] = []
    seen: set[str] = set()
    for n, entry in enumerate(files_json):
        where = f"files[{n}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where} is not an object")
        path = _get(entry, "path", str, where)
        sha = _get(entry, "sha256", str, where)
        if not _FILE_PATH.fullmatch(path):
            raise _Invalid(f"{where}.path {path[:80]!r} is not an allowed entry name")
        if not SHA256_HEX_PATTERN.fullmatch(sha):
            raise _Invalid(f"{where}.sha256 is not 64 lower-case hex characters")
        if path in seen:
            raise _Invalid(f"{where}.path {path!r} is listed twice")
        if path.startswith("blobs/") and path.rsplit("/", 1)[1] != sha:
            raise _Invalid(f"{where}: a blob's name must be its sha256")
        seen.add(path)
        files.append(CatalogFile(path, _size(entry, where, limits.max_total_bytes), sha))
    if [f.path for f in files[:2]] != [LAYOUT_NAME, INDEX_NAME]:
        raise _Invalid("the first files must be oci-layout and index.json")
    total = sum(f.size for f in files)
    if total > limits.max_total_bytes or obj.get("totalSize") != total:
        raise _Invalid(f"totalSize {obj.get('totalSize')!r} does not match the files ({total}) or exceeds the limit")
    by_digest = {f.digest: f for f in files if f.path.startswith("blobs/")}

    def manifest_in_bundle(digest: str, size: int, media_type: str | None, where: str) -> None:
        found = by_digest.get(digest)
        if found is None:
            raise _Invalid(f"{where}: {digest} is not in the bundle")
        if found.size != size or size > limits.max_manifest_bytes:
            raise _Invalid(f"{where}: size of {digest} disagrees with its file or exceeds the manifest limit")
        if media_type is not None and media_type not in MANIFEST_TYPES:
            raise _Invalid(f"{where}: unsupported manifest media type {media_type!r}")

    def manifest_fields(entry: dict[str, Any], where: str) -> tuple[str, str, str | None, str, str, int]:
        """Where a manifest came from (validated as a reference) and what it is (in the bundle)."""
        registry, repository = _get(entry, "registry", str, where), _get(entry, "repository", str, where)
        tag = _get(entry, "tag", str, where, optional=True)
        _name(registry, repository, tag, where)
        digest, media_type = _digest(entry, "digest", where), _get(entry, "mediaType", str, where)
        size = _size(entry, where, limits.max_manifest_bytes)
        manifest_in_bundle(digest, size, media_type, where)
        return registry, repository, tag, digest, media_type, size

    images_json = _get(obj, "images", list, "catalog")
    if len(images_json) > limits.max_images:
        raise _Invalid(f"more than {limits.max_images} images")
    images: list[CatalogImage] = []
    for n, entry in enumerate(images_json):
        where = f"images[{n}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where} is not an object")
        registry, repository, tag, digest, media_type, size = manifest_fields(entry, where)
        platforms = []
        for m, p in enumerate(_get(entry, "platforms", list, where)):
            pw = f"{where}.platforms[{m}]"
            if not isinstance(p, dict):
                raise _Invalid(f"{pw} is not an object")
            pd, pt, ps = (
                _digest(p, "digest", pw),
                _get(p, "mediaType", str, pw),
                _size(p, pw, limits.max_manifest_bytes),
            )
            manifest_in_bundle(pd, ps, pt, pw)
            platforms.append(CatalogPlatform(_get(p, "platform", str, pw, optional=True), pd, pt, ps))
        annotations = _get(entry, "annotations", dict, where, optional=True) or {}
        images.append(
            CatalogImage(
                source=_get(entry, "source", str, where),
                registry=registry,
                repository=repository,
                tag=tag,
                digest=digest,
                media_type=media_type,
                size=size,
                ref_name=_get(entry, "refName", str, where),
                platforms=tuple(platforms),
                original_digest=_digest(entry, "originalDigest", where, optional=True),
                annotations={str(k): str(v) for k, v in annotations.items()},
                verification=_get(entry, "verification", dict, where, optional=True),
            )
        )

    artifacts: list[CatalogArtifact] = []
    for n, entry in enumerate(_get(obj, "artifacts", list, "catalog")):
        where = f"artifacts[{n}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where} is not an object")
        kind = _get(entry, "kind", str, where)
        if kind not in ARTIFACT_KINDS:
            raise _Invalid(f"{where}.kind {kind[:40]!r} is unknown")
        registry, repository, tag, digest, media_type, size = manifest_fields(entry, where)
        subject = _digest(entry, "subject", where)
        if subject not in by_digest:
            raise _Invalid(f"{where}: its subject {subject} is not in the bundle")
        artifacts.append(
            CatalogArtifact(
                kind=kind,
                registry=registry,
                repository=repository,
                subject=subject,
                digest=digest,
                media_type=media_type,
                size=size,
                tag=tag,
                artifact_type=_get(entry, "artifactType", str, where, optional=True),
                ref_name=_get(entry, "refName", str, where, optional=True),
            )
        )
    tool: dict[str, Any] = obj["tool"] if isinstance(obj.get("tool"), dict) else {}
    extensions: dict[str, Any] = obj["extensions"] if isinstance(obj.get("extensions"), dict) else {}
    return Catalog(
        created=_get(obj, "created", str, "catalog"),
        tool_version=str(tool.get("version", "unknown")),
        images=tuple(images),
        artifacts=tuple(artifacts),
        files=tuple(files),
        extensions=dict(extensions),
    )
