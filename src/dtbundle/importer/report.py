"""What an import did (or, in a dry run, would do): typed counters and per-image results."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dtbundle.trust.evaluate import ImageVerification


class Count(StrEnum):
    """The import's counters; the value is the text the report shows."""

    BLOBS_EXIST = "blobs exist"
    BLOBS_UPLOADED = "blobs uploaded"
    BLOBS_MOUNTED = "blobs mounted"
    BLOBS_WOULD_UPLOAD = "blobs would be uploaded"
    BLOBS_WRITTEN = "blobs written"
    BLOBS_WOULD_WRITE = "blobs would be written"
    MANIFESTS_PUSHED = "manifests pushed"
    MANIFESTS_EXIST = "manifests exist"
    TAGS_PUSHED = "tags pushed"
    TAGS_UNCHANGED = "tags unchanged"
    TAGS_OVERWRITTEN = "tags overwritten"
    TAGS_WOULD_PUSH = "tags would be pushed"
    TAGS_WOULD_OVERWRITE = "tags would be overwritten"
    REFERRERS_VIA_API = "referrers via API"
    REFERRERS_INDEXES_WRITTEN = "referrers indexes written"
    REFERRERS_INDEXES_UNCHANGED = "referrers indexes unchanged"
    INDEX_ENTRIES_ADDED = "index entries added"
    INDEX_ENTRIES_UNCHANGED = "index entries unchanged"
    INDEX_ENTRIES_OVERWRITTEN = "index entries overwritten"
    INDEX_ENTRIES_WOULD_ADD = "index entries would be added"
    INDEX_ENTRIES_WOULD_OVERWRITE = "index entries would be overwritten"


@dataclass(frozen=True)
class ImportedImage:
    source: str  # source reference with tag
    target: str  # target reference with tag and digest


@dataclass
class ImportReport:
    bundle: str
    target: str
    dry_run: bool
    to_layout: bool
    signed_by: str | None
    counts: Counter[Count] = field(default_factory=Counter)
    bytes_uploaded: int = 0
    seconds: float = 0.0
    images: list[ImportedImage] = field(default_factory=list)
    signatures: list[ImageVerification] = field(default_factory=list)

    def add(self, count: Count, n: int = 1) -> None:
        """Count what happened; zero is not recorded (the report lists what happened)."""
        if n:
            self.counts[count] += n

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "target": self.target,
            "dryRun": self.dry_run,
            "signedBy": self.signed_by,
            "counts": {str(k): n for k, n in sorted(self.counts.items())},
            "bytesUploaded": self.bytes_uploaded,
            "seconds": round(self.seconds, 3),
            "images": [{"source": i.source, "target": i.target} for i in self.images],
            "signatureVerification": [v.to_json() for v in self.signatures],
        }
