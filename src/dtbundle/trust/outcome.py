"""What image-signature verification concluded, per image and for all images of a run.

Each image is in exactly one state: *verified* (its index, or every platform manifest,
has a valid signature under the policy), *unsigned by design* (reported, never required,
e.g. Classic Full-Stack images), *unsigned* (no signature found for it) or *rejected*
(signatures were found, but they do not verify it under the policy: wrong key, bad
signature, another image's digest, or only some platforms signed). The policy passes
when no image is unsigned or rejected. ``export``, ``verify`` and ``import`` report the
same counts, as text and in their ``--json`` documents (``imageSignatures``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtbundle.trust.evaluate import ImageVerification


class ImageStatus(StrEnum):
    """One image's state; the value is its key in ``imageSignatures.counts``."""

    VERIFIED = "verified"
    UNSIGNED_BY_DESIGN = "unsignedByDesign"
    UNSIGNED = "unsigned"
    REJECTED = "rejected"

    @classmethod
    def of(cls, verification: ImageVerification) -> ImageStatus:
        if verification.verified:
            return cls.VERIFIED
        if verification.unsigned_by_design:
            return cls.UNSIGNED_BY_DESIGN
        return cls.REJECTED if verification.checks else cls.UNSIGNED


class PolicyResult(StrEnum):
    PASSED = "passed"  # every image verified or unsigned by design
    FAILED = "failed"  # some image unsigned or rejected (an error under --require-signatures)
    NOT_CHECKED = "notChecked"  # no --cosign-key or keyless identity: signatures were not looked at


@dataclass(frozen=True)
class SignatureOutcome:
    """The image-signature verdict of one run: ``images`` is empty when nothing was checked."""

    checked: bool
    images: tuple[ImageVerification, ...] = ()

    @classmethod
    def of(cls, verifications: Sequence[ImageVerification] | None) -> SignatureOutcome:
        """None (or no images: every bundle has at least one) means no policy was given."""
        return cls(bool(verifications), tuple(verifications or ()))

    @property
    def counts(self) -> dict[ImageStatus, int]:
        """Every status, zero included."""
        counts = dict.fromkeys(ImageStatus, 0)
        for verification in self.images:
            counts[ImageStatus.of(verification)] += 1
        return counts

    @property
    def result(self) -> PolicyResult:
        if not self.checked:
            return PolicyResult.NOT_CHECKED
        counts = self.counts
        failed = counts[ImageStatus.UNSIGNED] or counts[ImageStatus.REJECTED]
        return PolicyResult.FAILED if failed else PolicyResult.PASSED

    def to_json(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "counts": {str(status): n for status, n in self.counts.items()},
            "images": [v.to_json() for v in self.images],
        }


class Coverage(StrEnum):
    """What signs a platform manifest: the index's signature, its own, both, or nothing."""

    INDEX = "index"
    OWN = "own"
    BOTH = "index+own"
    NONE = "none"

    @classmethod
    def of(cls, *, index: bool, own: bool) -> Coverage:
        return cls.BOTH if index and own else cls.INDEX if index else cls.OWN if own else cls.NONE

    @property
    def by_index(self) -> bool:
        return self in (Coverage.INDEX, Coverage.BOTH)

    @property
    def by_own(self) -> bool:
        return self in (Coverage.OWN, Coverage.BOTH)
