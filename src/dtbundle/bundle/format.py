"""The bundle format: entry names, and the catalog (``dtbundle.json``) records.

Each catalog record is a frozen dataclass whose fields declare, once, their JSON key
and how a reader validates them (:mod:`dtbundle.bundle.codec` encodes and decodes every
record); the cross-field checks are here. Pure code: bytes in, a validated :class:`Catalog`
out, or a :class:`CatalogError` that names the first problem. A reader trusts nothing in a catalog before its signature
verified, and even then validates every name, size and digest, because import turns
these values into registry paths and tags. See ``specs/bundle-format.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dtbundle import jsontext
from dtbundle.bundle.codec import (
    CROSS_CHECKS,
    Context,
    annotations_check,
    created_check,
    decode,
    dict_check,
    digest_check,
    encode,
    format_time,
    kind_check,
    parse_time,
    path_check,
    records,
    sha256_check,
    size_check,
    spec,
    str_check,
    typed,
)
from dtbundle.errors import CatalogError, IntegrityError, InvalidReferenceError
from dtbundle.limits import MAX_REQUIRED_HINTS, REFERENCE_NAME_MAX_LENGTH, BundleLimits
from dtbundle.oci import MANIFEST_TYPES, Reference, parse_reference
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.oci.reference import is_valid_path

__all__ = ["format_time", "parse_time"]  # re-exported: the catalog's time format, used by state and export

FORMAT_VERSION = 1  # a bundle without the members below: what every dtbundle reads
DELTA_FORMAT_VERSION = 2  # a delta bundle (required blobs) or a volume of a set: older readers refuse it
READ_VERSIONS = (FORMAT_VERSION, DELTA_FORMAT_VERSION)
CATALOG_NAME = "dtbundle.json"
SIGNATURE_NAME = "dtbundle.json.sig"
LAYOUT_NAME = "oci-layout"
INDEX_NAME = "index.json"
# Image annotations dtbundle itself understands (written by export, read by import):
TARGET_REPOSITORY_ANNOTATION = "dev.dtbundle.repository"  # private repository name at the target
UNSIGNED_ANNOTATION = "dev.dtbundle.unsigned"  # why the image has no signature, by design


def _volume_number(value: Any, where: str, ctx: Context) -> int:
    number = typed(int)(value, where, ctx)
    if not 1 <= number <= ctx.limits.max_files:
        raise CatalogError(f"bundle catalog is invalid: {where} {number} is outside 1..{ctx.limits.max_files}")
    return int(number)


def _hints(value: Any, where: str, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_REQUIRED_HINTS:
        raise CatalogError(
            f"bundle catalog is invalid: {where} is not a list of at most {MAX_REQUIRED_HINTS} repositories"
        )
    for name in value:  # repository names at the target, where import may mount the blob from
        if not isinstance(name, str) or not is_valid_path(name) or len(name) >= REFERENCE_NAME_MAX_LENGTH:
            raise CatalogError(f"bundle catalog is invalid: {where} names an invalid repository {str(name)[:80]!r}")
    return tuple(value)


# -- records ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogFile:
    path: str = field(metadata=spec(path_check))
    size: int = field(metadata=spec(size_check))
    sha256: str = field(metadata=spec(sha256_check))  # hex
    volume: int | None = field(default=None, metadata=spec(_volume_number, omit_empty=True))  # None: every volume

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"

    @property
    def is_blob(self) -> bool:
        """A whole blob or manifest (``blobs/sha256/…``); not the layout files or a part."""
        return self.path.startswith("blobs/")

    @property
    def part_of(self) -> str | None:
        """The digest of the blob this file is a part of (``parts/<hex>.<n>``), or None."""
        return "sha256:" + self.path[6:70] if self.path.startswith("parts/") else None


@dataclass(frozen=True)
class CatalogRequired:
    """A blob a delta bundle leaves out: the target must hold it (import checks, before tagging)."""

    digest: str = field(metadata=spec(digest_check))
    size: int = field(metadata=spec(size_check))
    repositories: tuple[str, ...] = field(default=(), metadata=spec(_hints, omit_empty=True))  # seen there


@dataclass(frozen=True)
class CatalogSplit:
    """A blob larger than a volume, carried as parts ``parts/<hex>.001``… in consecutive volumes."""

    digest: str = field(metadata=spec(digest_check))
    size: int = field(metadata=spec(size_check))
    parts: int = field(metadata=spec(_volume_number))


@dataclass(frozen=True)
class CatalogVolume:
    """Which volume of a set this bundle is; every volume carries the same catalog but this number."""

    set: str = field(metadata=spec(sha256_check))  # the set's identifier
    number: int = field(metadata=spec(_volume_number))
    count: int = field(metadata=spec(_volume_number))


@dataclass(frozen=True)
class CatalogPlatform:
    platform: str | None = field(metadata=spec(str_check, optional=True))
    digest: str = field(metadata=spec(digest_check))
    media_type: str = field(metadata=spec(str_check))
    size: int = field(metadata=spec(size_check))


@dataclass(frozen=True)
class CatalogImage:
    source: str = field(metadata=spec(str_check))  # the reference as the user gave it
    registry: str = field(metadata=spec(str_check))
    repository: str = field(metadata=spec(str_check))
    tag: str | None = field(metadata=spec(str_check, optional=True))
    digest: str = field(metadata=spec(digest_check))
    media_type: str = field(metadata=spec(str_check))
    size: int = field(metadata=spec(size_check))
    ref_name: str = field(metadata=spec(str_check))  # org.opencontainers.image.ref.name of its index.json entry
    platforms: tuple[CatalogPlatform, ...] = field(default=(), metadata=spec(records(CatalogPlatform)))
    original_digest: str | None = field(default=None, metadata=spec(digest_check, optional=True))  # --platform trim
    annotations: dict[str, str] = field(default_factory=dict, metadata=spec(annotations_check, optional=True))
    # Signature verification done at export (trust.evaluate's JSON form).
    verification: dict[str, Any] | None = field(default=None, metadata=spec(dict_check, omit_empty=True))

    @property
    def reference(self) -> Reference:
        return Reference(self.registry, self.repository, self.tag, self.digest)


@dataclass(frozen=True)
class CatalogArtifact:
    kind: ArtifactKind = field(metadata=spec(kind_check))
    registry: str = field(metadata=spec(str_check))
    repository: str = field(metadata=spec(str_check))
    tag: str | None = field(metadata=spec(str_check, optional=True))
    subject: str = field(metadata=spec(digest_check))
    digest: str = field(metadata=spec(digest_check))
    media_type: str = field(metadata=spec(str_check))
    size: int = field(metadata=spec(size_check))
    artifact_type: str | None = field(default=None, metadata=spec(str_check, optional=True))
    ref_name: str | None = field(default=None, metadata=spec(str_check, optional=True))


@dataclass(frozen=True)
class Catalog:
    created: str  # YYYY-MM-DDTHH:MM:SSZ (parse_time, format_time)
    tool_version: str
    images: tuple[CatalogImage, ...]
    artifacts: tuple[CatalogArtifact, ...]
    files: tuple[CatalogFile, ...]
    extensions: dict[str, Any] = field(default_factory=dict)
    required: tuple[CatalogRequired, ...] = ()  # a delta bundle: blobs left out, held by the target
    split: tuple[CatalogSplit, ...] = ()  # blobs carried in parts across volumes
    volume: CatalogVolume | None = None  # one volume of a set

    @property
    def total_size(self) -> int:
        """Bytes of every file of the bundle (of the whole set, for a volume)."""
        return sum(f.size for f in self.files)

    @property
    def format_version(self) -> int:
        return DELTA_FORMAT_VERSION if self.required or self.split or self.volume else FORMAT_VERSION

    def files_in(self, volume: int | None) -> tuple[CatalogFile, ...]:
        """The files a volume carries, in tar order (every file when ``volume`` is None)."""
        if volume is None:
            return self.files
        return tuple(f for f in self.files if f.volume is None or f.volume == volume)

    @property
    def own_files(self) -> tuple[CatalogFile, ...]:
        """The files of this bundle file (of this volume, for a volume of a set)."""
        return self.files_in(self.volume.number if self.volume else None)

    def blob_digests(self) -> frozenset[str]:
        """Digests of every blob the bundle (or its set) carries, whole or split."""
        return frozenset(f.digest for f in self.files if f.is_blob) | {s.digest for s in self.split}

    def to_json(self) -> dict[str, Any]:
        return {
            "formatVersion": self.format_version,
            "created": self.created,
            "tool": {"name": "dtbundle", "version": self.tool_version},
            "images": [encode(i) for i in self.images],
            "artifacts": [encode(a) for a in self.artifacts],
            "files": [encode(f) for f in self.files],
            "totalSize": self.total_size,
            **({"extensions": self.extensions} if self.extensions else {}),
            **({"required": [encode(r) for r in self.required]} if self.required else {}),
            **({"split": [encode(s) for s in self.split]} if self.split else {}),
            **({"volume": encode(self.volume)} if self.volume else {}),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=True) + "\n").encode()


# -- cross-field checks ---------------------------------------------------------------------------------
def _manifest_in_bundle(digest: str, size: int, media_type: str, where: str, ctx: Context) -> None:
    found = ctx.blobs.get(digest)
    if found is None:
        raise CatalogError(f"bundle catalog is invalid: {where}: {digest} is not in the bundle")
    if found.size != size or size > ctx.limits.max_manifest_bytes:
        raise CatalogError(
            f"bundle catalog is invalid: {where}: size of {digest} disagrees with its file "
            "or exceeds the manifest limit"
        )
    if media_type not in MANIFEST_TYPES:
        raise CatalogError(f"bundle catalog is invalid: {where}: unsupported manifest media type {media_type[:80]!r}")


def _canonical_name(registry: str, repository: str, tag: str | None, where: str) -> None:
    text = f"{registry}/{repository}" + (f":{tag}" if tag else "")
    try:
        ref = parse_reference(text, default_tag=None)
    except InvalidReferenceError:
        raise CatalogError(f"bundle catalog is invalid: {where} names an invalid registry, repository or tag") from None
    if (ref.registry, ref.repository, ref.tag) != (registry, repository, tag):
        raise CatalogError(f"bundle catalog is invalid: {where} names a registry/repository that is not canonical")


def _check_file(f: CatalogFile, where: str, ctx: Context) -> None:
    if f.is_blob and f.path.rsplit("/", 1)[1] != f.sha256:
        raise CatalogError(f"bundle catalog is invalid: {where}: a blob's name must be its sha256")


def _check_platform(p: CatalogPlatform, where: str, ctx: Context) -> None:
    _manifest_in_bundle(p.digest, p.size, p.media_type, where, ctx)


def _check_ref_name(ref_name: str | None, registry: str, repository: str, tag: str | None, where: str) -> None:
    """A root's ``index.json`` name is its own reference: it becomes a name in the target layout."""
    if ref_name is None:
        return
    try:
        ref = parse_reference(ref_name, default_tag=None)
    except InvalidReferenceError:
        ref = None
    if ref is None or (ref.registry, ref.repository, ref.tag) != (registry, repository, tag):
        raise CatalogError(f"bundle catalog is invalid: {where}.refName is not a reference of {registry}/{repository}")


def _check_image(i: CatalogImage, where: str, ctx: Context) -> None:
    _canonical_name(i.registry, i.repository, i.tag, where)
    _check_ref_name(i.ref_name, i.registry, i.repository, i.tag, where)
    _manifest_in_bundle(i.digest, i.size, i.media_type, where, ctx)
    private = i.annotations.get(TARGET_REPOSITORY_ANNOTATION)
    if private is not None and not (is_valid_path(private) and len(private) < REFERENCE_NAME_MAX_LENGTH):
        # It becomes a repository below --registry: a path like ../other would escape it.
        raise CatalogError(f"bundle catalog is invalid: {where} names an invalid target repository {private[:80]!r}")


def _check_artifact(a: CatalogArtifact, where: str, ctx: Context) -> None:
    _canonical_name(a.registry, a.repository, a.tag, where)
    _check_ref_name(a.ref_name, a.registry, a.repository, a.tag, where)
    _manifest_in_bundle(a.digest, a.size, a.media_type, where, ctx)
    if a.subject not in ctx.blobs:
        raise CatalogError(f"bundle catalog is invalid: {where}: its subject {a.subject} is not in the bundle")


CROSS_CHECKS.update(
    {
        CatalogFile: _check_file,
        CatalogPlatform: _check_platform,
        CatalogImage: _check_image,
        CatalogArtifact: _check_artifact,
    }
)


def parse_catalog(data: bytes, limits: BundleLimits) -> Catalog:
    """Validate and parse catalog bytes; raise CatalogError naming the first problem."""
    if len(data) > limits.max_catalog_bytes:
        raise CatalogError(f"bundle catalog is larger than {limits.max_catalog_bytes} bytes")
    try:
        obj = jsontext.loads(data, limits.catalog_json)  # size, depth, elements: before anything is built
    except ValueError as exc:  # not UTF-8, not JSON, or beyond a bound
        raise CatalogError(
            f"bundle catalog is not valid JSON or exceeds the reader's bounds ({str(exc)[:200]}): "
            "the bundle is corrupt or hostile"
        ) from None
    if not isinstance(obj, dict):
        raise CatalogError("bundle catalog is not a JSON object")
    version = obj.get("formatVersion")
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise IntegrityError(
            f"bundle format version {version!r} is not supported by this dtbundle "
            f"(it reads versions {FORMAT_VERSION} and {DELTA_FORMAT_VERSION}); "
            "use the dtbundle release that wrote the bundle"
        )
    ctx = Context(limits)
    files_json, images_json = obj.get("files"), obj.get("images")
    for what, items, limit in (("files", files_json, limits.max_files), ("images", images_json, limits.max_images)):
        if isinstance(items, list) and len(items) > limit:
            raise CatalogError(f"bundle catalog is invalid: more than {limit} {what}")
    files = records(CatalogFile)(files_json, "files", ctx)
    seen: set[str] = set()
    for n, f in enumerate(files):
        if f.path in seen:
            raise CatalogError(f"bundle catalog is invalid: files[{n}].path {f.path!r} is listed twice")
        seen.add(f.path)
    if [f.path for f in files[:2]] != [LAYOUT_NAME, INDEX_NAME]:
        raise CatalogError("bundle catalog is invalid: the first files must be oci-layout and index.json")
    total = sum(f.size for f in files)
    if total > limits.max_total_bytes or obj.get("totalSize") != total:
        raise CatalogError(
            f"bundle catalog is invalid: totalSize {obj.get('totalSize')!r} does not match the files ({total}) "
            "or exceeds the limit"
        )
    ctx.blobs.update((f.digest, f) for f in files if f.is_blob)
    roots = sum(len(x) for x in (images_json, obj.get("artifacts")) if isinstance(x, list))
    if files[0].size > 1024 or files[1].size > len(data) + 256 * roots + 1024:
        # index.json lists the catalog's roots (import buffers it to compare them): it cannot be larger
        raise CatalogError("bundle catalog is invalid: oci-layout or index.json is larger than its roots explain")
    tool: dict[str, Any] = obj["tool"] if isinstance(obj.get("tool"), dict) else {}
    extensions: dict[str, Any] = obj["extensions"] if isinstance(obj.get("extensions"), dict) else {}
    catalog = Catalog(
        created=created_check(obj.get("created"), "catalog.created", ctx),
        tool_version=str(tool.get("version", "unknown")),
        images=records(CatalogImage)(images_json, "images", ctx),
        artifacts=records(CatalogArtifact)(obj.get("artifacts"), "artifacts", ctx),
        files=files,
        extensions=dict(extensions),
        required=records(CatalogRequired)(obj.get("required", []), "required", ctx),
        split=records(CatalogSplit)(obj.get("split", []), "split", ctx),
        volume=None if obj.get("volume") is None else decode(CatalogVolume, obj["volume"], "volume", ctx),
    )
    if catalog.format_version != version:  # an older reader must refuse what it cannot honour
        raise CatalogError(f"bundle catalog is invalid: formatVersion {version} does not match its members")
    _check_delta_and_volumes(catalog, limits)
    return catalog


def _check_delta_and_volumes(catalog: Catalog, limits: BundleLimits) -> None:
    """Required blobs are not carried; volume numbers and parts are consistent; shared files are shared."""
    carried = catalog.blob_digests()
    if len(catalog.required) > limits.max_files or len(catalog.split) > limits.max_files:
        raise CatalogError(f"bundle catalog is invalid: more than {limits.max_files} required or split blobs")
    required = {r.digest for r in catalog.required}
    if len(required) != len(catalog.required) or required & carried:
        raise CatalogError("bundle catalog is invalid: a required blob is listed twice or also carried")
    volume = catalog.volume
    if volume is not None and not 1 <= volume.number <= volume.count:
        raise CatalogError(f"bundle catalog is invalid: volume {volume.number} of {volume.count}")
    count = volume.count if volume else 0
    roots = {i.digest for i in catalog.images} | {a.digest for a in catalog.artifacts}
    roots |= {p.digest for i in catalog.images for p in i.platforms}
    for n, f in enumerate(catalog.files):
        if f.volume is not None and f.volume > count:
            raise CatalogError(f"bundle catalog is invalid: files[{n}] names volume {f.volume} of {count}")
        if f.volume is not None and (not f.path.startswith(("blobs/", "parts/")) or f.digest in roots):
            raise CatalogError(f"bundle catalog is invalid: files[{n}] must be in every volume")
        if f.part_of is not None and f.volume is None:
            raise CatalogError(f"bundle catalog is invalid: files[{n}] is a part outside a volume set")
    paths = {f.path: f for f in catalog.files}
    if len({s.digest for s in catalog.split}) != len(catalog.split):
        raise CatalogError("bundle catalog is invalid: a split blob is listed twice")
    parts = 0
    for n, s in enumerate(catalog.split):
        if parts + s.parts > len(catalog.files):  # before building names: a count no file list explains
            raise CatalogError(f"bundle catalog is invalid: split[{n}] has more parts than the bundle has files")
        names = [f"parts/{s.digest[7:]}.{k:03d}" for k in range(1, s.parts + 1)]
        listed = [paths.get(name) for name in names]
        if f"blobs/sha256/{s.digest[7:]}" in paths or None in listed or sum(p.size for p in listed if p) != s.size:
            raise CatalogError(f"bundle catalog is invalid: split[{n}] does not match its parts")
        parts += len(names)
    if parts != sum(1 for f in catalog.files if f.part_of is not None):
        raise CatalogError("bundle catalog is invalid: a part belongs to no split blob")
