"""Signature keys: the key types cosign and Sigstore sign with, loading and fingerprinting
them, and the one raw signature check every verification step goes through.

Supported: ECDSA P-256 (SHA-256) and P-384 (SHA-384), Ed25519, RSA with PKCS#1 v1.5 or PSS
(SHA-256); over the signed bytes, or over their SHA-256 digest when only that is known
(Sigstore message signatures). Pure.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from dtbundle.errors import UsageError
from dtbundle.oci.digest import sha256_digest

VerifyKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def as_verify_key(key: PublicKeyTypes) -> VerifyKey | None:
    """``key`` if it is of a type cosign signs with, else None."""
    if isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        return key
    return None


def key_fingerprint(key: VerifyKey) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo: how a key signer is reported."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256_digest(der)


def load_verify_key(data: bytes, where: str) -> VerifyKey:
    """A cosign public key (PEM SubjectPublicKeyInfo): ECDSA, Ed25519 or RSA."""
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{where} is not a PEM public key (cosign.pub format)") from None
    key = as_verify_key(loaded)
    if key is None:
        raise UsageError(f"{where} holds an unsupported key type; cosign keys are ECDSA, Ed25519 or RSA")
    return key


def verify_signature(key: VerifyKey, signature: bytes, data: bytes | None, digest: bytes | None) -> bool:
    """Verify over ``data``, or over its SHA-256 ``digest`` when only that is known."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if data is None:
                return False  # Ed25519 signs the message itself; a digest is not enough
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
            if data is not None:
                key.verify(signature, data, ec.ECDSA(algorithm))
            elif isinstance(algorithm, hashes.SHA256) and digest is not None:
                key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            else:
                return False  # the digest is SHA-256; a P-384 key signs SHA-384
        else:
            message, scheme = (
                (data, hashes.SHA256()) if data is not None else (digest, utils.Prehashed(hashes.SHA256()))
            )
            if message is None:
                return False
            try:
                key.verify(signature, message, padding.PKCS1v15(), scheme)
            except InvalidSignature:
                # cosign signs RSA with PKCS#1 v1.5, other Sigstore clients with PSS: accept either.
                pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
                key.verify(signature, message, pss, scheme)
        return True
    except (InvalidSignature, ValueError):
        return False
