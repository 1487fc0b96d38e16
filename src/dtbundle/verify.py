"""``dtbundle verify`` as a library call: the bundle (signature, every entry), then the images'
signatures under a policy, offline, from the bundle's own content.

This is where the bundle reader and image-signature trust meet; neither depends on the
other. :func:`collect_signatures` is the one "stream the bundle and keep what signatures
need" step, used here and by the importer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtbundle.bundle.format import Catalog, CatalogFile
from dtbundle.bundle.key import PublicKey
from dtbundle.bundle.reader import STDIN, Observer, VerifyResult, open_bundle
from dtbundle.bundle.volumeset import VolumeCheck
from dtbundle.errors import CatalogError, IntegrityError, UsageError
from dtbundle.limits import TRUST, BundleLimits
from dtbundle.oci.digest import sha256_hex
from dtbundle.progress import NO_PROGRESS, Progress, byte_counter
from dtbundle.trust.evaluate import ImageVerification, SignatureCollector, require_verified
from dtbundle.trust.outcome import SignatureOutcome
from dtbundle.trust.policy import Policy
from dtbundle.trust.root import TrustedRoot

TRUST_EXTENSION = "trust"  # catalog extensions: {"trust": {"trustedRoot": {"digest": …, "size": …}}}


def trusted_root_extension(root: bytes) -> dict[str, Any]:
    """The catalog extension naming a carried ``trusted_root.json`` (specs/bundle-format.md §3)."""
    return {TRUST_EXTENSION: {"trustedRoot": {"digest": "sha256:" + sha256_hex(root), "size": len(root)}}}


def carried_root(catalog: Catalog) -> CatalogFile | None:
    """The file of the trusted root the bundle carries, or None; a malformed record is a catalog error."""
    trust = catalog.extensions.get(TRUST_EXTENSION)
    record = trust.get("trustedRoot") if isinstance(trust, dict) else None
    if record is None:
        return None
    digest = record.get("digest") if isinstance(record, dict) else None
    entry = next((f for f in catalog.files if f.path.startswith("blobs/") and f.digest == digest), None)
    if entry is None or not isinstance(record, dict) or record.get("size") != entry.size:
        raise CatalogError("bundle catalog is invalid: extensions.trust.trustedRoot names no file of the bundle")
    if entry.size > TRUST.max_signature_layer_bytes:
        raise CatalogError("bundle catalog is invalid: its trusted root is larger than the signature layer limit")
    return entry


def expect_carried_root(catalog: Catalog, policy: Policy, collector: SignatureCollector) -> str | None:
    """Before streaming: the digest of the trusted root ``policy`` waits for (kept by ``collector``),
    or None when it needs none; a usage error when it needs one and the bundle carries none."""
    if not policy.root_pending:
        return None
    entry = carried_root(catalog)
    if entry is None:
        raise UsageError(
            "keyless verification (--certificate-identity…) needs --trusted-root FILE: the bundle carries no "
            "trusted root (export it with keyless options to carry one)"
        )
    collector.wanted.add(entry.digest)
    return entry.digest


def with_carried_root(policy: Policy, digest: str | None, collector: SignatureCollector) -> Policy:
    """After streaming (the bundle verified): ``policy`` with the carried trusted root."""
    if digest is None:
        return policy
    data = collector.blobs.get(digest)
    if data is None:
        raise IntegrityError(f"the bundle's trusted root {digest} was not read")
    return policy.with_root(TrustedRoot.from_json(data, "the trusted root the bundle carries"))


def collect_signatures(collector: SignatureCollector, entry: CatalogFile, data: Iterator[bytes]) -> Iterator[bytes]:
    """Pass ``data`` through, keeping signature manifests and the small layers they name."""
    if entry.digest in collector.signature_artifacts:
        raw = b"".join(data)
        collector.manifest(entry.digest, raw)
        yield raw
    else:
        yield from collector.tap(entry.digest, data)


def _observer(collector: SignatureCollector | None) -> Observer | None:
    if collector is None:
        return None
    return lambda entry, data: collect_signatures(collector, entry, data)


@dataclass(frozen=True)
class BundleVerification:
    bundle: VerifyResult  # of every file given, in all
    images: list[ImageVerification] | None  # with a signature policy
    volumes: tuple[int, ...] = ()  # a volume set: the numbers verified
    missing: tuple[int, ...] = ()  # … and those not given

    def to_json(self) -> dict[str, Any]:
        volume = self.bundle.catalog.volume
        return {
            "bundleKey": self.bundle.key_id,
            "counts": {"images": len(self.bundle.catalog.images), "files": self.bundle.files},
            "uncompressedBytes": self.bundle.bytes,
            "imageSignatures": SignatureOutcome.of(self.images).to_json(),
            "volumes": None
            if volume is None
            else {"set": volume.set, "count": volume.count, "given": list(self.volumes), "missing": list(self.missing)},
        }


def verify(
    path: Path | Sequence[Path],
    keys: list[PublicKey],
    policy: Policy | None,
    *,
    require_signatures: bool = False,
    limits: BundleLimits | None = None,
    progress: Progress = NO_PROGRESS,
) -> BundleVerification:
    """Verify the bundle (one pass each: a bundle, or volumes of one set), then each image's signatures
    under ``policy`` (every volume carries what signatures need).

    Raises IntegrityError at the first bundle problem, VolumeSetError for files that are not
    volumes of one set, and PolicyError when ``require_signatures`` and an image lacks a valid
    signature.
    """
    paths = [path] if isinstance(path, Path) else list(path)
    results: list[VerifyResult] = []
    check: VolumeCheck | None = None
    collector: SignatureCollector | None = None
    root: str | None = None
    for each in paths:
        progress.phase(f"verifying {'standard input' if each == STDIN else each.name}")
        with open_bundle(each, keys, limits) as bundle:
            if check is None:
                check = VolumeCheck(bundle.catalog, each)
                if policy is not None:
                    collector = SignatureCollector(bundle.catalog)
                    root = expect_carried_root(bundle.catalog, policy, collector)
            else:
                check.add(bundle.catalog, each)
            results.append(bundle.verify_entries(byte_counter(progress), _observer(collector)))
    assert check is not None, "no bundle given"
    first = results[0]
    result = VerifyResult(first.catalog, first.key_id, sum(r.files for r in results), sum(r.bytes for r in results))
    volume = first.catalog.volume
    given = tuple(sorted(check.numbers)) if volume else ()
    missing = tuple(n for n in range(1, volume.count + 1) if n not in check.numbers) if volume else ()
    if collector is None or policy is None:
        return BundleVerification(result, None, given, missing)
    images = collector.evaluate(with_carried_root(policy, root, collector))
    if require_signatures:
        require_verified(images)
    return BundleVerification(result, images, given, missing)
