"""The bundle format: entry names, and the catalog (``dtbundle.json``) with its one codec.

Each catalog record is a frozen dataclass whose fields declare, once, their JSON key
and how a reader validates them; :func:`encode` and :func:`decode` serve every record.
Pure code: bytes in, a validated :class:`Catalog` out, or a :class:`CatalogError` that
names the first problem. A reader trusts nothing in a catalog before its signature
verified, and even then validates every name, size and digest, because import turns
these values into registry paths and tags. See ``specs/bundle-format.md``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dtbundle import jsontext
from dtbundle.errors import CatalogError, IntegrityError, InvalidReferenceError
from dtbundle.limits import REFERENCE_NAME_MAX_LENGTH, BundleLimits
from dtbundle.oci import MANIFEST_TYPES, Reference, parse_reference
from dtbundle.oci.digest import SHA256_HEX_PATTERN, SHA256_PATTERN
from dtbundle.oci.kinds import ARTIFACT_KINDS, ArtifactKind
from dtbundle.oci.reference import is_valid_path

FORMAT_VERSION = 1
CATALOG_NAME = "dtbundle.json"
SIGNATURE_NAME = "dtbundle.json.sig"
LAYOUT_NAME = "oci-layout"
INDEX_NAME = "index.json"
# Image annotations dtbundle itself understands (written by export, read by import):
TARGET_REPOSITORY_ANNOTATION = "dev.dtbundle.repository"  # private repository name at the target
UNSIGNED_ANNOTATION = "dev.dtbundle.unsigned"  # why the image has no signature, by design
_FILE_PATH = re.compile(rf"(oci-layout|index\.json|blobs/sha256/{SHA256_HEX_PATTERN.pattern})")


@dataclass(frozen=True)
class _Context:
    """What field validators need besides the value: the limits and the files listed so far."""

    limits: BundleLimits
    blobs: dict[str, CatalogFile] = field(default_factory=dict)  # digest -> file


Check = Callable[[Any, str, _Context], Any]


def _spec(check: Check, key: str | None = None, *, optional: bool = False, omit_empty: bool = False) -> dict[str, Any]:
    """Field metadata: the validator, the JSON key (default: camelCase of the name), and whether
    the value may be null (``optional``) or is left out of the JSON when empty (``omit_empty``)."""
    return {"check": check, "key": key, "optional": optional or omit_empty, "omit_empty": omit_empty}


# -- validators ---------------------------------------------------------------------------------------
def _typed(kind: type) -> Check:
    def check(value: Any, where: str, ctx: _Context) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CatalogError(f"bundle catalog is invalid: {where} is missing or not a {kind.__name__}")
        return value

    return check


_str, _dict = _typed(str), _typed(dict)


def _size(value: Any, where: str, ctx: _Context) -> int:
    size = _typed(int)(value, where, ctx)
    if not 0 <= size <= ctx.limits.max_total_bytes:
        raise CatalogError(f"bundle catalog is invalid: {where} {size} is outside 0..{ctx.limits.max_total_bytes}")
    return int(size)


def _digest(value: Any, where: str, ctx: _Context) -> str:
    if not isinstance(value, str) or not SHA256_PATTERN.fullmatch(value):
        raise CatalogError(f"bundle catalog is invalid: {where} is not a sha256 digest")
    return value


def _sha256_hex(value: Any, where: str, ctx: _Context) -> str:
    if not isinstance(value, str) or not SHA256_HEX_PATTERN.fullmatch(value):
        raise CatalogError(f"bundle catalog is invalid: {where} is not 64 lower-case hex characters")
    return value


def _path(value: Any, where: str, ctx: _Context) -> str:
    if not isinstance(value, str) or not _FILE_PATH.fullmatch(value):
        raise CatalogError(f"bundle catalog is invalid: {where} {str(value)[:80]!r} is not an allowed entry name")
    return value


def _kind(value: Any, where: str, ctx: _Context) -> ArtifactKind:
    if not isinstance(value, str) or value not in ARTIFACT_KINDS:
        raise CatalogError(f"bundle catalog is invalid: {where} {str(value)[:40]!r} is unknown")
    return ArtifactKind(value)


def _annotations(value: Any, where: str, ctx: _Context) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(value, where, ctx).items()}


R = TypeVar("R")


def _records(cls: type[R]) -> Check:
    def check(value: Any, where: str, ctx: _Context) -> tuple[R, ...]:
        if not isinstance(value, list):
            raise CatalogError(f"bundle catalog is invalid: {where} is missing or not a list")
        return tuple(decode(cls, item, f"{where}[{n}]", ctx) for n, item in enumerate(value))

    return check


# -- the creation time -------------------------------------------------------------------------------
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(text: str) -> datetime.datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` (the catalog's ``created``) as an aware UTC datetime; ValueError otherwise."""
    if not _CREATED.fullmatch(text):
        raise ValueError(f"{text[:40]!r} is not YYYY-MM-DDTHH:MM:SSZ")
    return datetime.datetime.strptime(text, _CREATED_FORMAT).replace(tzinfo=datetime.UTC)


def format_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime(_CREATED_FORMAT)


def _created(value: Any, where: str, ctx: _Context) -> str:
    try:
        parse_time(_str(value, where, ctx))
    except ValueError as exc:  # import compares it with the times it recorded: it must mean one instant
        raise CatalogError(f"bundle catalog is invalid: {where} {exc}") from None
    return str(value)


# -- records ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogFile:
    path: str = field(metadata=_spec(_path))
    size: int = field(metadata=_spec(_size))
    sha256: str = field(metadata=_spec(_sha256_hex))  # hex

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass(frozen=True)
class CatalogPlatform:
    platform: str | None = field(metadata=_spec(_str, optional=True))
    digest: str = field(metadata=_spec(_digest))
    media_type: str = field(metadata=_spec(_str))
    size: int = field(metadata=_spec(_size))


@dataclass(frozen=True)
class CatalogImage:
    source: str = field(metadata=_spec(_str))  # the reference as the user gave it
    registry: str = field(metadata=_spec(_str))
    repository: str = field(metadata=_spec(_str))
    tag: str | None = field(metadata=_spec(_str, optional=True))
    digest: str = field(metadata=_spec(_digest))
    media_type: str = field(metadata=_spec(_str))
    size: int = field(metadata=_spec(_size))
    ref_name: str = field(metadata=_spec(_str))  # org.opencontainers.image.ref.name of its index.json entry
    platforms: tuple[CatalogPlatform, ...] = field(default=(), metadata=_spec(_records(CatalogPlatform)))
    original_digest: str | None = field(default=None, metadata=_spec(_digest, optional=True))  # --platform trim
    annotations: dict[str, str] = field(default_factory=dict, metadata=_spec(_annotations, optional=True))
    # Signature verification done at export (trust.evaluate's JSON form).
    verification: dict[str, Any] | None = field(default=None, metadata=_spec(_dict, omit_empty=True))

    @property
    def reference(self) -> Reference:
        return Reference(self.registry, self.repository, self.tag, self.digest)


@dataclass(frozen=True)
class CatalogArtifact:
    kind: ArtifactKind = field(metadata=_spec(_kind))
    registry: str = field(metadata=_spec(_str))
    repository: str = field(metadata=_spec(_str))
    tag: str | None = field(metadata=_spec(_str, optional=True))
    subject: str = field(metadata=_spec(_digest))
    digest: str = field(metadata=_spec(_digest))
    media_type: str = field(metadata=_spec(_str))
    size: int = field(metadata=_spec(_size))
    artifact_type: str | None = field(default=None, metadata=_spec(_str, optional=True))
    ref_name: str | None = field(default=None, metadata=_spec(_str, optional=True))


@dataclass(frozen=True)
class Catalog:
    created: str  # YYYY-MM-DDTHH:MM:SSZ (parse_time, format_time)
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
            "images": [encode(i) for i in self.images],
            "artifacts": [encode(a) for a in self.artifacts],
            "files": [encode(f) for f in self.files],
            "totalSize": self.total_size,
            **({"extensions": self.extensions} if self.extensions else {}),
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=True) + "\n").encode()


# -- the codec ----------------------------------------------------------------------------------------
def _key(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("key"):
        return str(f.metadata["key"])
    head, *rest = f.name.split("_")
    return head + "".join(part.title() for part in rest)


def encode(record: Any) -> dict[str, Any]:
    """A catalog record as JSON-ready data (the inverse of :func:`decode`)."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.metadata.get("omit_empty") and not value:
            continue
        if isinstance(value, tuple):
            value = [encode(v) for v in value]
        elif isinstance(value, dict):
            value = dict(value)
        result[_key(f)] = str(value) if isinstance(value, ArtifactKind) else value
    return result


def decode(cls: type[R], obj: Any, where: str, ctx: _Context) -> R:
    """Validate ``obj`` field by field against ``cls``'s declarations and build the record."""
    if not isinstance(obj, dict):
        raise CatalogError(f"bundle catalog is invalid: {where} is not an object")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = _key(f)
        value = obj.get(key)
        if value is None and f.metadata["optional"]:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            values[f.name] = None
            continue
        values[f.name] = f.metadata["check"](value, f"{where}.{key}", ctx)
    record = cls(**values)
    cross_check = _CROSS_CHECKS.get(cls)
    if cross_check is not None:
        cross_check(record, where, ctx)
    return record


# -- cross-field checks ---------------------------------------------------------------------------------
def _manifest_in_bundle(digest: str, size: int, media_type: str, where: str, ctx: _Context) -> None:
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


def _check_file(f: CatalogFile, where: str, ctx: _Context) -> None:
    if f.path.startswith("blobs/") and f.path.rsplit("/", 1)[1] != f.sha256:
        raise CatalogError(f"bundle catalog is invalid: {where}: a blob's name must be its sha256")


def _check_platform(p: CatalogPlatform, where: str, ctx: _Context) -> None:
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


def _check_image(i: CatalogImage, where: str, ctx: _Context) -> None:
    _canonical_name(i.registry, i.repository, i.tag, where)
    _check_ref_name(i.ref_name, i.registry, i.repository, i.tag, where)
    _manifest_in_bundle(i.digest, i.size, i.media_type, where, ctx)
    private = i.annotations.get(TARGET_REPOSITORY_ANNOTATION)
    if private is not None and not (is_valid_path(private) and len(private) < REFERENCE_NAME_MAX_LENGTH):
        # It becomes a repository below --registry: a path like ../other would escape it.
        raise CatalogError(f"bundle catalog is invalid: {where} names an invalid target repository {private[:80]!r}")


def _check_artifact(a: CatalogArtifact, where: str, ctx: _Context) -> None:
    _canonical_name(a.registry, a.repository, a.tag, where)
    _check_ref_name(a.ref_name, a.registry, a.repository, a.tag, where)
    _manifest_in_bundle(a.digest, a.size, a.media_type, where, ctx)
    if a.subject not in ctx.blobs:
        raise CatalogError(f"bundle catalog is invalid: {where}: its subject {a.subject} is not in the bundle")


_CROSS_CHECKS: dict[type, Callable[[Any, str, _Context], None]] = {
    CatalogFile: _check_file,
    CatalogPlatform: _check_platform,
    CatalogImage: _check_image,
    CatalogArtifact: _check_artifact,
}


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
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"bundle format version {version!r} is not supported by this dtbundle "
            f"(it reads version {FORMAT_VERSION}); use the dtbundle release that wrote the bundle"
        )
    ctx = _Context(limits)
    files_json, images_json = obj.get("files"), obj.get("images")
    for what, items, limit in (("files", files_json, limits.max_files), ("images", images_json, limits.max_images)):
        if isinstance(items, list) and len(items) > limit:
            raise CatalogError(f"bundle catalog is invalid: more than {limit} {what}")
    files = _records(CatalogFile)(files_json, "files", ctx)
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
    ctx.blobs.update((f.digest, f) for f in files if f.path.startswith("blobs/"))
    roots = sum(len(x) for x in (images_json, obj.get("artifacts")) if isinstance(x, list))
    if files[0].size > 1024 or files[1].size > len(data) + 256 * roots + 1024:
        # index.json lists the catalog's roots (import buffers it to compare them): it cannot be larger
        raise CatalogError("bundle catalog is invalid: oci-layout or index.json is larger than its roots explain")
    tool: dict[str, Any] = obj["tool"] if isinstance(obj.get("tool"), dict) else {}
    extensions: dict[str, Any] = obj["extensions"] if isinstance(obj.get("extensions"), dict) else {}
    return Catalog(
        created=_created(obj.get("created"), "catalog.created", ctx),
        tool_version=str(tool.get("version", "unknown")),
        images=_records(CatalogImage)(images_json, "images", ctx),
        artifacts=_records(CatalogArtifact)(obj.get("artifacts"), "artifacts", ctx),
        files=files,
        extensions=dict(extensions),
    )
