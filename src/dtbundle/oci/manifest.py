"""Descriptors and manifests: what a manifest points at, parsed from its exact bytes (pure).

Manifests are parsed only to learn what they point at; the bytes themselves are never
re-serialised, because a digest is a hash of exact bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dtbundle import jsontext
from dtbundle.errors import RegistryProtocolError, UnsupportedManifestError
from dtbundle.oci.digest import is_digest
from dtbundle.oci.media import IMAGE_TYPES, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, SCHEMA1_TYPES
from dtbundle.oci.platform import Platform


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about one piece of content."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> Descriptor:
        if not isinstance(obj, dict):
            raise RegistryProtocolError("descriptor is not a JSON object")
        digest, size, media_type = obj.get("digest"), obj.get("size"), obj.get("mediaType")
        if not isinstance(digest, str) or not is_digest(digest):
            raise RegistryProtocolError(f"descriptor has a malformed digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryProtocolError(f"descriptor {digest} has an invalid size {size!r}")
        if not isinstance(media_type, str) or not media_type:
            raise RegistryProtocolError(f"descriptor {digest} has no mediaType")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise RegistryProtocolError(f"descriptor {digest} has malformed annotations")
        artifact_type = obj.get("artifactType")
        urls = obj.get("urls") or ()
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=Platform.from_json(obj.get("platform")),
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
            annotations={str(k): str(v) for k, v in annotations.items()},
            urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
        )

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            obj["artifactType"] = self.artifact_type
        if self.platform:
            obj["platform"] = self.platform.to_json()
        if self.annotations:
            obj["annotations"] = dict(self.annotations)
        return obj


@dataclass(frozen=True)
class ParsedManifest:
    """What a manifest points at. The raw bytes stay with the caller."""

    media_type: str
    manifests: tuple[Descriptor, ...] = ()  # index children
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def blobs(self) -> Iterator[Descriptor]:
        """Config and layers (the blobs an image manifest needs)."""
        if self.config is not None:
            yield self.config
        yield from self.layers


def load_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = jsontext.loads(data)
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, nesting too deep
        raise RegistryProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RegistryProtocolError(f"{what} is not a JSON object")
    return obj


def detect_media_type(data: bytes, declared: str | None) -> str:
    """The manifest's media type: the body's ``mediaType`` wins over a header.

    Registries sometimes answer with a generic Content-Type; the body is what
    was hashed, so its own field is authoritative. Schema1 is refused here.
    """
    obj = load_json_object(data, "manifest")
    body_type = obj.get("mediaType")
    media_type = body_type if isinstance(body_type, str) and body_type else None
    if (declared and declared in SCHEMA1_TYPES) or obj.get("schemaVersion") == 1:
        raise UnsupportedManifestError(
            "Docker schema1 manifest: it cannot be copied without conversion, which would "
            "change its digest; ask the publisher for a schema2 or OCI image"
        )
    if media_type is None:
        if declared in MANIFEST_TYPES:
            media_type = declared
        elif "manifests" in obj:
            media_type = OCI_INDEX
        elif "config" in obj:
            media_type = OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise UnsupportedManifestError(f"unsupported manifest media type {media_type or declared!r}")
    return media_type


def parse_manifest(data: bytes, media_type: str) -> ParsedManifest:
    """Parse manifest bytes of a known media type into what they reference."""
    obj = load_json_object(data, "manifest")
    subject = Descriptor.from_json(obj["subject"]) if obj.get("subject") else None
    artifact_type = obj.get("artifactType") if isinstance(obj.get("artifactType"), str) else None
    annotations = obj.get("annotations") if isinstance(obj.get("annotations"), dict) else {}
    if media_type in INDEX_TYPES:
        children = obj.get("manifests")
        if not isinstance(children, list):
            raise RegistryProtocolError("image index has no 'manifests' list")
        return ParsedManifest(
            media_type=media_type,
            manifests=tuple(Descriptor.from_json(c) for c in children),
            subject=subject,
            artifact_type=artifact_type,
            annotations=dict(annotations or {}),
        )
    if media_type in IMAGE_TYPES:
        layers = obj.get("layers")
        if "config" not in obj or not isinstance(layers, list):
            raise RegistryProtocolError("image manifest lacks 'config' or 'layers'")
        return ParsedManifest(
            media_type=media_type,
            config=Descriptor.from_json(obj["config"]),
            layers=tuple(Descriptor.from_json(layer) for layer in layers),
            subject=subject,
            artifact_type=artifact_type,
            annotations=dict(annotations or {}),
        )
    raise UnsupportedManifestError(f"unsupported manifest media type {media_type!r}")
