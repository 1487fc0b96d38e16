"""What an import did (or, in a dry run, would do): typed counters and per-image results."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from dtbundle.trust.outcome import SignatureOutcome

if TYPE_CHECKING:
    from dtbundle.trust.evaluate import ImageVerification


class Count(StrEnum):
    """The import's counters; the value is the text the report shows."""

    BLOBS_EXIST = "blobs exist"
    BLOBS_UPLOADED = "blobs uploaded"
    BLOBS_MOUNTED = "blobs mounted"
    BLOBS_REQUIRED_PRESENT = "blobs left out by the delta, at the target (per repository)"
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
    TAGS_IN_CONFLICT = "tags in conflict"  # dry run without --overwrite: the import would be refused
    REFERRERS_VIA_API = "referrers via API"
    REFERRERS_INDEXES_WRITTEN = "referrers indexes written"
    REFERRERS_INDEXES_UNCHANGED = "referrers indexes unchanged"
    INDEX_ENTRIES_ADDED = "index entries added"
    INDEX_ENTRIES_UNCHANGED = "index entries unchanged"
    INDEX_ENTRIES_OVERWRITTEN = "index entries overwritten"
    INDEX_ENTRIES_WOULD_ADD = "index entries would be added"
    INDEX_ENTRIES_WOULD_OVERWRITE = "index entries would be overwritten"


class Landing(StrEnum):
    """What an import does (or, in a dry run, would do) to an image's target tag."""

    NEW = "new"  # the tag does not exist yet
    PRESENT = "present"  # the tag already points at this image
    CONFLICT = "conflict"  # the tag points at another digest: refused without --overwrite
    OVERWRITE = "overwrite"  # the tag points at another digest and --overwrite replaces it


@dataclass(frozen=True)
class PlannedLanding:
    """Where one image of the bundle lands, and in what state it finds its target tag."""

    source: str  # source reference with tag
    target: str  # target reference with tag (a ref name in an OCI layout)
    digest: str
    state: Landing
    current: str | None = None  # the digest the target tag has now


@dataclass(frozen=True)
class ImportedImage:
    source: str  # source reference with tag
    target: str  # target reference with tag and digest


@dataclass(frozen=True)
class VolumeReport:
    """A volume set: which volumes this run read, and which the target still lacks blobs of."""

    set: str
    count: int
    given: tuple[int, ...]
    missing: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "count": self.count, "given": list(self.given), "missing": list(self.missing)}


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
    plan: list[PlannedLanding] = field(default_factory=list)  # dry runs: each image's landing
    volumes: VolumeReport | None = None  # a volume set
    waiting: list[str] = field(default_factory=list)  # images not published: the target lacks some of their blobs

    @property
    def conflicts(self) -> list[PlannedLanding]:
        return [p for p in self.plan if p.state == Landing.CONFLICT]

    def add(self, count: Count, n: int = 1) -> None:
        """Count what happened; zero is not recorded (the report lists what happened)."""
        if n:
            self.counts[count] += n

    def to_json(self) -> dict[str, Any]:
        """The ``import --json`` fields (specs/json-output.md): every counter, zero included."""

        def key(count: Count) -> str:  # BLOBS_EXIST -> blobsExist: the enum fixes the set of keys
            first, *rest = count.name.lower().split("_")
            return first + "".join(word.title() for word in rest)

        return {
            "bundle": self.bundle,
            "target": self.target,
            "dryRun": self.dry_run,
            "toLayout": self.to_layout,
            "bundleKey": self.signed_by,
            "counts": {key(count): self.counts[count] for count in Count},
            "uploadedBytes": self.bytes_uploaded,
            "seconds": round(self.seconds, 3),
            "images": [{"source": i.source, "target": i.target} for i in self.images],
            "plan": [
                {
                    "source": p.source,
                    "target": p.target,
                    "digest": p.digest,
                    "state": str(p.state),
                    "currentDigest": p.current,
                }
                for p in self.plan
            ],
            "imageSignatures": SignatureOutcome.of(self.signatures).to_json(),
            "volumes": self.volumes.to_json() if self.volumes else None,
            "waiting": list(self.waiting),
        }
