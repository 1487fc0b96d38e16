"""The catalog codec: field declarations, validators and the one encode/decode of catalog records.

A record is a frozen dataclass whose fields declare, once, their JSON key and the validator a
reader runs (:func:`spec`); :func:`decode` builds a record from parsed JSON only through those
validators, then the record's cross-field check (registered by :mod:`dtbundle.bundle.format`).
Pure code.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dtbundle.errors import CatalogError
from dtbundle.limits import BundleLimits
from dtbundle.oci.digest import SHA256_HEX_PATTERN, SHA256_PATTERN
from dtbundle.oci.kinds import ARTIFACT_KINDS, ArtifactKind

# Entry names a bundle may hold: the layout files, blobs, and the parts of a blob split across volumes.
_HEX = SHA256_HEX_PATTERN.pattern
_FILE_PATH = re.compile(rf"(oci-layout|index\.json|blobs/sha256/{_HEX}|parts/{_HEX}\.\d{{3,7}})")
CROSS_CHECKS: dict[type, Callable[[Any, str, Context], None]] = {}  # filled by dtbundle.bundle.format


@dataclass(frozen=True)
class Context:
    """What field validators need besides the value: the limits and the files listed so far."""

    limits: BundleLimits
    blobs: dict[str, Any] = field(default_factory=dict)  # digest -> file


Check = Callable[[Any, str, Context], Any]


def spec(check: Check, key: str | None = None, *, optional: bool = False, omit_empty: bool = False) -> dict[str, Any]:
    """Field metadata: the validator, the JSON key (default: camelCase of the name), and whether
    the value may be null (``optional``) or is left out of the JSON when empty (``omit_empty``)."""
    return {"check": check, "key": key, "optional": optional or omit_empty, "omit_empty": omit_empty}


# -- validators ---------------------------------------------------------------------------------------
def typed(kind: type) -> Check:
    def check(value: Any, where: str, ctx: Context) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CatalogError(f"bundle catalog is invalid: {where} is missing or not a {kind.__name__}")
        return value

    return check


str_check, dict_check = typed(str), typed(dict)


def size_check(value: Any, where: str, ctx: Context) -> int:
    number = typed(int)(value, where, ctx)
    if not 0 <= number <= ctx.limits.max_total_bytes:
        raise CatalogError(f"bundle catalog is invalid: {where} {number} is outside 0..{ctx.limits.max_total_bytes}")
    return int(number)


def digest_check(value: Any, where: str, ctx: Context) -> str:
    if not isinstance(value, str) or not SHA256_PATTERN.fullmatch(value):
        raise CatalogError(f"bundle catalog is invalid: {where} is not a sha256 digest")
    return value


def sha256_check(value: Any, where: str, ctx: Context) -> str:
    if not isinstance(value, str) or not SHA256_HEX_PATTERN.fullmatch(value):
        raise CatalogError(f"bundle catalog is invalid: {where} is not 64 lower-case hex characters")
    return value


def path_check(value: Any, where: str, ctx: Context) -> str:
    if not isinstance(value, str) or not _FILE_PATH.fullmatch(value):
        raise CatalogError(f"bundle catalog is invalid: {where} {str(value)[:80]!r} is not an allowed entry name")
    return value


def kind_check(value: Any, where: str, ctx: Context) -> ArtifactKind:
    if not isinstance(value, str) or value not in ARTIFACT_KINDS:
        raise CatalogError(f"bundle catalog is invalid: {where} {str(value)[:40]!r} is unknown")
    return ArtifactKind(value)


def annotations_check(value: Any, where: str, ctx: Context) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict_check(value, where, ctx).items()}


R = TypeVar("R")


def records(cls: type[R]) -> Check:
    def check(value: Any, where: str, ctx: Context) -> tuple[R, ...]:
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


def created_check(value: Any, where: str, ctx: Context) -> str:
    try:
        parse_time(str_check(value, where, ctx))
    except ValueError as exc:  # import compares it with the times it recorded: it must mean one instant
        raise CatalogError(f"bundle catalog is invalid: {where} {exc}") from None
    return str(value)


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
            value = [encode(v) if dataclasses.is_dataclass(v) else v for v in value]
        elif isinstance(value, dict):
            value = dict(value)
        result[_key(f)] = str(value) if isinstance(value, ArtifactKind) else value
    return result


def decode(cls: type[R], obj: Any, where: str, ctx: Context) -> R:
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
    cross_check = CROSS_CHECKS.get(cls)
    if cross_check is not None:
        cross_check(record, where, ctx)
    return record
