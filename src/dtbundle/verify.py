"""``dtbundle verify`` as a library call: the bundle (signature, every entry), then the images'
signatures under a policy, offline, from the bundle's own content.

This is where the bundle reader and image-signature trust meet; neither depends on the
other. :func:`collect_signatures` is the one "stream the bundle and keep what signatures
need" step, used here and by the importer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dtbundle.bundle.format import CatalogFile
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.reader import VerifyResult, open_bundle, verify_bundle
from dtbundle.limits import BundleLimits
from dtbundle.trust.evaluate import ImageVerification, SignatureCollector
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

    @property
    def policy_passed(self) -> bool:
        """Every image verified (or is unsigned by design); True without a policy."""
        return self.images is None or all(i.verified or i.unsigned_by_design for i in self.images)


def verify(
    path: Path,
    keys: list[PublicKey],
    policy: Policy | None,
    *,
    limits: BundleLimits | None = None,
    progress_factory: Callable[[int], Callable[[int], None]] | None = None,
) -> BundleVerification:
    """Raise IntegrityError at the first bundle problem; report each image's signatures."""
    if policy is None:
        return BundleVerification(verify_bundle(path, keys, limits, progress_factory), None)
    with open_bundle(path, keys, limits) as head:
        collector = SignatureCollector(head.catalog)
    result = verify_bundle(path, keys, limits, progress_factory, lambda e, d: collect_signatures(collector, e, d))
    return BundleVerification(result, collector.evaluate(policy))
