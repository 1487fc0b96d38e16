"""What an export wrote, for the report: per image, per bundle (or volume), and in all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle.bundle.writer import WrittenBundle
from dtbundle.export.cache import CacheUse
from dtbundle.export.stream import StreamUse
from dtbundle.oci.kinds import ArtifactKind, attachment_counts
from dtbundle.trust.evaluate import ImageVerification
from dtbundle.trust.outcome import SignatureOutcome


@dataclass(frozen=True)
class ImageSummary:
    """What export carried for one requested image."""

    reference: str  # as requested
    digest: str
    platforms: tuple[str | None, ...]
    original_digest: str | None  # before --platform trimmed the index
    found: dict[ArtifactKind, int]  # attachments carried, by kind
    dropped_with_trim: int  # attachments of the original index, which a trim invalidates

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "platformNames": list(self.platforms),
            "originalDigest": self.original_digest,
            "attachmentCounts": attachment_counts(self.found),
            "droppedWithTrim": self.dropped_with_trim,
        }


@dataclass
class ExportSummary:
    written: list[WrittenBundle]  # the bundle, or each volume of the set
    key_id: str
    images: int
    platforms: int
    artifacts: dict[ArtifactKind, int]
    manifests: int
    blobs: int
    uncompressed_bytes: int
    compressed_bytes: int
    seconds: float
    per_image: list[ImageSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    signatures: list[ImageVerification] = field(default_factory=list)
    cache: CacheUse | None = None  # None: no --cache-dir
    transfer: StreamUse = field(default_factory=StreamUse)  # how blobs reached the bundle (not in JSON)
    required_blobs: int = 0  # a delta bundle: blobs left out, which the target holds
    required_bytes: int = 0
    volume_set: str | None = None  # the set's identifier, for --volume-size

    @property
    def path(self) -> Path:
        return self.written[0].path

    @property
    def sidecar(self) -> Path | None:
        return self.written[0].sidecar

    @property
    def sha256(self) -> str:
        return self.written[0].sha256

    def to_json(self) -> dict[str, Any]:
        cache = self.cache
        return {
            "bundle": str(self.path),
            "sha256": self.sha256,
            "sidecar": str(self.sidecar) if self.sidecar else None,
            "written": [
                {
                    "bundle": str(w.path),
                    "sha256": w.sha256,
                    "sidecar": str(w.sidecar) if w.sidecar else None,
                    "compressedBytes": w.compressed_size,
                }
                for w in self.written
            ],
            "volumeSet": self.volume_set,
            "delta": dict(requiredBlobs=self.required_blobs, requiredBytes=self.required_bytes),
            "bundleKey": self.key_id,
            "counts": dict(images=self.images, platforms=self.platforms, manifests=self.manifests, blobs=self.blobs),
            "attachmentCounts": attachment_counts(self.artifacts),
            "uncompressedBytes": self.uncompressed_bytes,
            "compressedBytes": self.compressed_bytes,
            "seconds": round(self.seconds, 3),
            "images": [i.to_json() for i in self.per_image],
            "warnings": list(self.warnings),
            "imageSignatures": SignatureOutcome.of(self.signatures).to_json(),
            "cache": dict(blobs=cache.hits, blobBytes=cache.hit_bytes, redownloaded=cache.refetched) if cache else None,
        }
