"""``dtbundle verify`` as a library call: the bundle (signature, every entry), then the images'
signatures under a policy, offline, from the bundle's own content.

This is where the bundle reader and image-signature trust meet; neither depends on the
other. :func:`collect_signatures` is the one "stream the bundle and keep what signatures
need" step, used here and by the importer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtbundle.bundle.format import CatalogFile
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.reader import VerifyResult, open_bundle
from dtbundle.limits import BundleLimits
from dtbundle.progress import NO_PROGRESS, Progress, byte_counter
from dtbundle.trust.evaluate import ImageVerification, SignatureCollector, require_verified
from dtbundle.trust.outcome import SignatureOutcome
from dtbundle.trust.policy import Policy


def collect_signatures(collector: SignatureCollector, entry: CatalogFile, data: Iterator[bytes]) -> Iterator[bytes]:
    """Pass ``data`` through, keeping signature manifests and the small layers they name."""
    if entry.digest in collector.signature_artifacts:
        raw = b"".join(data)
        collector.manifest(entry.digest, raw)
        yield raw
    else:
        yield from collector.tap(entry.digest, data)


@dataclass(frozen=True)
class BundleVerification:
    bundle: VerifyResult
    images: list[ImageVerification] | None  # with a signature policy

    def to_json(self) -> dict[str, Any]:
        return {
            "bundleKey": self.bundle.key_id,
            "counts": {"images": len(self.bundle.catalog.images), "files": self.bundle.files},
            "uncompressedBytes": self.bundle.bytes,
            "imageSignatures": SignatureOutcome.of(self.images).to_json(),
        }


def verify(
    path: Path,
    keys: list[PublicKey],
    policy: Policy | None,
    *,
    require_signatures: bool = False,
    limits: BundleLimits | None = None,
    progress: Progress = NO_PROGRESS,
) -> BundleVerification:
    """Verify the bundle (one pass), then each image's signatures under ``policy``.

    Raises IntegrityError at the first bundle problem, and PolicyError when
    ``require_signatures`` and an image lacks a valid signature.
    """
    progress.phase(f"verifying {path.name}")
    with open_bundle(path, keys, limits) as bundle:
        if policy is None:
            return BundleVerification(bundle.verify_entries(byte_counter(progress)), None)
        collector = SignatureCollector(bundle.catalog)
        result = bundle.verify_entries(byte_counter(progress), lambda e, d: collect_signatures(collector, e, d))
    images = collector.evaluate(policy)
    if require_signatures:
        require_verified(images)
    return BundleVerification(result, images)
