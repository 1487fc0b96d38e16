"""Value types the registry client returns: a manifest as received, referrers, a PUT's result."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from dtbundle.oci import INDEX_TYPES, Descriptor, ParsedManifest, parse_manifest


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry sent it."""

    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def parsed(self) -> ParsedManifest:
        return parse_manifest(self.data, self.media_type)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


@dataclass(frozen=True)
class Referrers:
    """Manifests whose ``subject`` is a digest, and how they were found."""

    descriptors: tuple[Descriptor, ...]
    source: Literal["api", "tag-schema", "none"]
    # The referrers tag schema index itself (source "tag-schema"), byte for byte.
    index: Manifest | None = None


@dataclass(frozen=True)
class PutResult:
    digest: str
    # The registry processed the manifest's subject (OCI 1.1 referrers API present).
    subject_accepted: bool
