"""cosign simple signing: the signatures cosign stores at ``sha256-<hex>.sig`` tags.

One layer per signature, media type ``application/vnd.dev.cosign.simplesigning.v1+json``;
the layer blob is the payload (a JSON document naming the signed image digest), the
``dev.cosignproject.cosign/signature`` annotation the base64 signature over it. Keyless
signatures add ``dev.sigstore.cosign/certificate``, ``.../chain`` and a Rekor bundle
(``dev.sigstore.cosign/bundle``). Pure: bytes in, a verdict out.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from dtbundle import jsontext
from dtbundle.errors import SignatureError
from dtbundle.oci import COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING
from dtbundle.oci.digest import sha256_digest, sha256_hex
from dtbundle.trust.certificates import pem_certificates
from dtbundle.trust.policy import Policy, Verdict
from dtbundle.trust.signer import SignerMaterial, check_signer, decode_b64
from dtbundle.trust.transparency import LogEntry

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
_SIMPLE_SIGNING_TYPE = "cosign container image signature"


def verify_simple_signing(
    payload: bytes,
    annotations: Mapping[str, str],
    *,
    media_type: str,
    layer_digest: str | None,
    image_digest: str | None,
    policy: Policy,
) -> Verdict:
    """One layer of a cosign ``.sig`` manifest, against the image digest it should cover."""
    if media_type != COSIGN_SIMPLESIGNING:
        return Verdict(False, "cosign", f"not a cosign signature (layer media type {media_type})")
    claimed: str | None = None
    try:
        if layer_digest is not None and not hmac.compare_digest(sha256_digest(payload), layer_digest):
            raise SignatureError("payload does not match its layer digest")
        signature = decode_b64(annotations.get(COSIGN_SIGNATURE_ANNOTATION), "signature annotation")
        try:
            document = jsontext.loads(payload)
            critical = document["critical"]
            claimed = str(critical["image"]["docker-manifest-digest"])
            kind = critical.get("type")
        except (ValueError, KeyError, TypeError):
            raise SignatureError("payload is not a cosign simple signing document") from None
        if kind != _SIMPLE_SIGNING_TYPE:
            raise SignatureError(f"payload type {kind!r} is not a cosign image signature")
        material = SignerMaterial()
        entries: list[LogEntry] = []
        if CERTIFICATE_ANNOTATION in annotations:
            material.cert = pem_certificates(annotations[CERTIFICATE_ANNOTATION].encode(), "certificate annotation")[0]
            if annotations.get(CHAIN_ANNOTATION):
                material.chain = pem_certificates(annotations[CHAIN_ANNOTATION].encode(), "chain annotation")
        if REKOR_BUNDLE_ANNOTATION in annotations:
            entries.append(LogEntry.from_cosign_bundle(annotations[REKOR_BUNDLE_ANNOTATION]))
        signer = check_signer(material, policy, signature, payload, None, entries, sha256_hex(payload), dsse=False)
        # A claim counts only once the payload is known to be authentic.
        if image_digest is not None and claimed != image_digest:
            raise SignatureError(f"signature is for {claimed}, not for {image_digest}")
        return Verdict(True, "cosign", "signature verified", signer, claimed)
    except SignatureError as exc:
        return Verdict(False, "cosign", str(exc), None, claimed)
