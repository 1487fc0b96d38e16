"""Per-image signature evaluation: which signatures verify, and what they cover.

Given an image (its top digest and platform manifests), the signature artifacts that
refer to them (cosign ``.sig`` manifests, Sigstore bundle referrers) and a way to
read small blobs, this says, with :mod:`dtbundle.trust.simple_signing` and
:mod:`dtbundle.trust.sigstore_bundle`, which signatures verify and whether each platform
manifest is covered by the index signature or its own, and (:func:`require_verified`)
whether that satisfies ``--require-signatures``.
Pure: the caller supplies the bytes (from a registry at export, from the bundle at
verify and import time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dtbundle.bundle.format import UNSIGNED_ANNOTATION, Catalog, CatalogImage
from dtbundle.errors import PolicyError
from dtbundle.limits import TRUST
from dtbundle.oci import COSIGN_SIMPLESIGNING, SIGSTORE_BUNDLE_V03, parse_manifest
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.trust.outcome import Coverage, ImageStatus
from dtbundle.trust.policy import Policy, Verdict
from dtbundle.trust.sigstore_bundle import verify_sigstore_bundle
from dtbundle.trust.simple_signing import verify_simple_signing

BlobReader = Callable[[str], bytes | None]


@dataclass(frozen=True)
class SignatureArtifact:
    kind: ArtifactKind
    subject: str
    digest: str
    media_type: str
    data: bytes  # the manifest


@dataclass(frozen=True)
class Check:
    subject: str
    signature: str  # the signature manifest digest
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "signatureManifest": self.signature, **self.verdict.to_json()}


@dataclass
class ImageVerification:
    image: str  # reference as given
    digest: str
    checks: list[Check] = field(default_factory=list)
    # platform digest -> what covers it
    coverage: dict[str, Coverage] = field(default_factory=dict)
    unsigned_by_design: str | None = None  # e.g. Classic Full-Stack images: reported, never required

    @property
    def index_signed(self) -> bool:
        return any(c.verdict.valid and c.subject == self.digest for c in self.checks)

    @property
    def verified(self) -> bool:
        """The top manifest verifies, or (no top signature) every platform manifest does."""
        if self.index_signed:
            return True
        return bool(self.coverage) and all(c.by_own for c in self.coverage.values())

    @property
    def signers(self) -> list[str]:
        return sorted({c.verdict.signer for c in self.checks if c.verdict.valid and c.verdict.signer})

    def to_json(self) -> dict[str, Any]:
        # Also the catalog's ``verification`` record (specs/bundle-format.md); specs/json-output.md.
        return {
            "image": self.image,
            "digest": self.digest,
            "status": str(ImageStatus.of(self)),
            "verified": self.verified,
            "signers": self.signers,
            "platforms": {digest: str(coverage) for digest, coverage in self.coverage.items()},
            "signatures": [c.to_json() for c in self.checks],
            "unsignedByDesign": self.unsigned_by_design,
        }


def signature_layers(artifact: SignatureArtifact) -> Iterator[tuple[str, str, int, Mapping[str, str]]]:
    """(digest, media type, size, annotations) of the layers that may hold signatures."""
    parsed = parse_manifest(artifact.data, artifact.media_type)
    for layer in parsed.layers:
        if (
            layer.media_type in (COSIGN_SIMPLESIGNING, SIGSTORE_BUNDLE_V03)
            and layer.size <= TRUST.max_signature_layer_bytes
        ):
            yield layer.digest, layer.media_type, layer.size, layer.annotations


def is_signature_artifact(kind: ArtifactKind, artifact_type: str | None) -> bool:
    return kind == ArtifactKind.COSIGN_SIG or (kind == ArtifactKind.REFERRER and artifact_type == SIGSTORE_BUNDLE_V03)


def verify_image(
    image: str,
    digest: str,
    platforms: Iterable[str],
    artifacts: Iterable[SignatureArtifact],
    blob: BlobReader,
    policy: Policy,
    unsigned_by_design: str | None = None,
) -> ImageVerification:
    platform_list = list(platforms)
    subjects = {digest, *platform_list}
    result = ImageVerification(image, digest, unsigned_by_design=unsigned_by_design)
    for artifact in artifacts:
        if artifact.subject not in subjects:
            continue
        for layer_digest, media_type, _, layer_annotations in signature_layers(artifact):
            content = blob(layer_digest)
            if content is None:
                verdict = Verdict(False, "cosign", f"signature layer {layer_digest} is not available")
            elif media_type == COSIGN_SIMPLESIGNING:
                verdict = verify_simple_signing(
                    content,
                    layer_annotations,
                    media_type=media_type,
                    layer_digest=layer_digest,
                    image_digest=artifact.subject,
                    policy=policy,
                )
            else:
                verdict = verify_sigstore_bundle(content, image_digest=artifact.subject, artifact=None, policy=policy)
            result.checks.append(Check(artifact.subject, artifact.digest, verdict))
    own = {c.subject for c in result.checks if c.verdict.valid}
    for platform in platform_list:
        result.coverage[platform] = Coverage.of(index=digest in own, own=platform in own)
    if not platform_list:
        result.coverage[digest] = Coverage.of(index=False, own=digest in own)
    return result


def require_verified(verifications: Sequence[ImageVerification]) -> None:
    """--require-signatures: every image needs a valid signature (its index, or every platform);
    images unsigned by design (Classic Full-Stack) are reported, never required."""
    for v in verifications:
        if not v.verified and not v.unsigned_by_design:
            reasons = sorted({c.verdict.detail for c in v.checks if not c.verdict.valid})
            why = "; ".join(reasons) if reasons else "no signature found"
            raise PolicyError(f"{v.image} ({v.digest}) has no valid signature: {why}")


def verify_catalog_images(
    catalog: Catalog, manifests: Mapping[str, bytes], blob: BlobReader, policy: Policy
) -> list[ImageVerification]:
    """Evaluate every image of a bundle from its own content."""
    artifacts = [
        SignatureArtifact(a.kind, a.subject, a.digest, a.media_type, manifests[a.digest])
        for a in catalog.artifacts
        if is_signature_artifact(a.kind, a.artifact_type) and a.digest in manifests
    ]
    return [_verify_catalog_image(i, artifacts, blob, policy) for i in catalog.images]


def _verify_catalog_image(
    image: CatalogImage, artifacts: list[SignatureArtifact], blob: BlobReader, policy: Policy
) -> ImageVerification:
    return verify_image(
        image.source,
        image.digest,
        [p.digest for p in image.platforms],
        artifacts,
        blob,
        policy,
        image.annotations.get(UNSIGNED_ANNOTATION),
    )


class SignatureCollector:
    """Keeps, while a bundle streams, the manifests and small layers that signatures live in."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.signature_artifacts = {
            a.digest: a for a in catalog.artifacts if is_signature_artifact(a.kind, a.artifact_type)
        }
        self.manifests: dict[str, bytes] = {}
        self.wanted: set[str] = set()
        self.blobs: dict[str, bytes] = {}

    def manifest(self, digest: str, data: bytes) -> None:
        artifact = self.signature_artifacts.get(digest)
        if artifact is None:
            return
        self.manifests[digest] = data
        signature = SignatureArtifact(artifact.kind, artifact.subject, digest, artifact.media_type, data)
        self.wanted |= {d for d, *_ in signature_layers(signature)}

    def tap(self, digest: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        if digest not in self.wanted:
            yield from chunks
            return
        kept = bytearray()
        for chunk in chunks:
            kept += chunk
            yield chunk
        self.blobs[digest] = bytes(kept)

    def evaluate(self, policy: Policy) -> list[ImageVerification]:
        return verify_catalog_images(self.catalog, self.manifests, self.blobs.get, policy)
