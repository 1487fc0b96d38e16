"""Sigstore bundles: how cosign v3 stores signatures, as OCI 1.1 referrers
(``application/vnd.dev.sigstore.bundle.v0.3+json``).

A bundle holds a message signature (over the artifact's SHA-256) or a DSSE envelope carrying
an in-toto statement, a public key hint or a certificate (chain), and transparency log
entries. Pure: bytes in, a verdict out.
"""

from __future__ import annotations

from cryptography import x509

from dtbundle import jsontext
from dtbundle.errors import SignatureError
from dtbundle.oci import SIGSTORE_BUNDLE_V03
from dtbundle.oci.digest import sha256_hex
from dtbundle.trust.policy import Policy, Verdict
from dtbundle.trust.signer import SignerMaterial, check_signer, decode_b64
from dtbundle.trust.transparency import LogEntry

BUNDLE_MEDIA_TYPES = frozenset(
    {
        SIGSTORE_BUNDLE_V03,
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
_INTOTO = "application/vnd.in-toto+json"


def verify_sigstore_bundle(data: bytes, *, image_digest: str | None, artifact: bytes | None, policy: Policy) -> Verdict:
    """A Sigstore bundle over ``artifact`` (bytes) or an image (its digest)."""
    claimed: str | None = None
    try:
        try:
            bundle = jsontext.loads(data)
            media_type = bundle["mediaType"]
            material_json = bundle["verificationMaterial"]
        except (ValueError, KeyError, TypeError):
            raise SignatureError("not a Sigstore bundle") from None
        if media_type not in BUNDLE_MEDIA_TYPES:
            raise SignatureError(f"unsupported Sigstore bundle media type {media_type!r}")
        material = SignerMaterial()
        if "certificate" in material_json:
            material.cert = x509.load_der_x509_certificate(
                decode_b64(material_json["certificate"].get("rawBytes"), "certificate")
            )
        elif "x509CertificateChain" in material_json:
            chain = [
                x509.load_der_x509_certificate(decode_b64(c.get("rawBytes"), "certificate"))
                for c in material_json["x509CertificateChain"].get("certificates", [])
            ]
            if not chain:
                raise SignatureError("empty certificate chain")
            material.cert, material.chain = chain[0], chain[1:]
        elif "publicKey" not in material_json:
            raise SignatureError("bundle has neither a certificate nor a public key")
        entries = [LogEntry.from_sigstore_bundle(e) for e in material_json.get("tlogEntries", [])]
        expected = (
            sha256_hex(artifact)
            if artifact is not None
            else (image_digest.split(":", 1)[1] if image_digest and image_digest.startswith("sha256:") else None)
        )
        if expected is None:
            raise SignatureError("nothing to verify the bundle against")
        if "messageSignature" in bundle:
            message = bundle["messageSignature"]
            digest = decode_b64(message.get("messageDigest", {}).get("digest"), "message digest")
            claimed = "sha256:" + digest.hex()
            if message.get("messageDigest", {}).get("algorithm") != "SHA2_256" or digest.hex() != expected:
                raise SignatureError(f"bundle signs {claimed}, not sha256:{expected}")
            signature = decode_b64(message.get("signature"), "signature")
            signer = check_signer(material, policy, signature, artifact, digest, entries, digest.hex(), dsse=False)
        elif "dsseEnvelope" in bundle:
            envelope = bundle["dsseEnvelope"]
            payload = decode_b64(envelope.get("payload"), "DSSE payload")
            payload_type = str(envelope.get("payloadType", ""))
            signatures = envelope.get("signatures") or []
            if len(signatures) != 1:
                raise SignatureError("a DSSE envelope must carry exactly one signature")
            signature = decode_b64(signatures[0].get("sig"), "DSSE signature")
            signer = check_signer(
                material, policy, signature, _pae(payload_type, payload), None, entries, sha256_hex(payload), dsse=True
            )
            claimed = _intoto_subject(payload, payload_type, expected)
        else:
            raise SignatureError("bundle has no message signature or DSSE envelope")
        return Verdict(True, "sigstore-bundle", "bundle verified", signer, claimed)
    except SignatureError as exc:
        return Verdict(False, "sigstore-bundle", str(exc), None, claimed)
    except (ValueError, TypeError, AttributeError):
        # Unexpected JSON shapes (a string where an object belongs) and undecodable DER.
        return Verdict(False, "sigstore-bundle", "malformed Sigstore bundle", None, claimed)


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()  # lengths are byte counts, also for a non-ASCII type
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _intoto_subject(payload: bytes, payload_type: str, expected_hex: str) -> str:
    """The in-toto statement must name the expected SHA-256 among its subjects."""
    if payload_type != _INTOTO:
        raise SignatureError(f"DSSE payload type {payload_type!r} is not an in-toto statement")
    try:
        statement = jsontext.loads(payload)
        digests = [s["digest"].get("sha256") for s in statement["subject"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SignatureError("the in-toto statement is malformed") from None
    if expected_hex not in digests:
        raise SignatureError(f"the in-toto statement's subject is not sha256:{expected_hex}")
    return f"sha256:{expected_hex}"
