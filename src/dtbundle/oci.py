"""OCI and Docker media types, digests and descriptors, and manifest parsing.

Everything here is pure: bytes in, values or verdicts out. Manifests are
parsed only to learn what they point at; the bytes themselves are never
re-serialised, because a digest is a hash of exact bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dtbundle.errors import DigestMismatchError, RegistryProtocolError, UnsupportedManifestError

# Manifests
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# Configs and layers
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Signatures
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGSTORE_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# What we ask registries for: every type we can carry byte for byte, and no schema1.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")


def is_digest(text: str) -> bool:
    return _DIGEST_RE.fullmatch(text) is not None


def check_digest(text: str) -> str:
    """Return ``text`` if it is a sha256/sha512 digest, else raise."""
    if not is_digest(text):
        raise RegistryProtocolError(f"malformed or unsupported digest {text!r}")
    return text


def new_hasher(digest: str) -> Any:
    """A hashlib object of the digest's algorithm."""
    return hashlib.new(check_digest(digest).split(":", 1)[0])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


def digest_matches(data: bytes, digest: str) -> bool:
    algorithm = check_digest(digest).split(":", 1)[0]
    return hmac.compare_digest(compute_digest(data, algorithm), digest)


def verify_bytes(data: bytes, digest: str, what: str) -> None:
    """Raise DigestMismatchError unless ``data`` hashes to ``digest``."""
    if not digest_matches(data, digest):
        actual = compute_digest(data, digest.split(":", 1)[0])
        raise DigestMismatchError(f"{what}: content has digest {actual}, expected {digest}")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Platform | None:
        if not isinstance(obj, dict) or "os" not in obj or "architecture" not in obj:
            return None
        variant = obj.get("variant")
        return cls(str(obj["os"]), str(obj["architecture"]), str(variant) if variant else None)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


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
            p: dict[str, str] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            obj["platform"] = p
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
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def referrers_tag(digest: str) -> str:
    """The referrers tag schema / cosign tag prefix: ``sha256:abc`` -> ``sha256-abc``."""
    return check_digest(digest).replace(":", "-", 1)
