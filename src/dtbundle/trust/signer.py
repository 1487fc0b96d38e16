"""The signer check both signature formats share: does the signature verify with a trusted key,
or (keyless) with a certificate that chains to the trusted root, was logged in Rekor while it
was valid, and certifies an identity the policy accepts. Also the base64 field decoding both
formats need.

Failures raise :class:`~dtbundle.errors.SignatureError`; the format modules turn it into a
verdict.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from dtbundle.errors import SignatureError
from dtbundle.trust.certificates import certificate_identity, chain_to_root
from dtbundle.trust.keys import as_verify_key, key_fingerprint, verify_signature
from dtbundle.trust.policy import Policy
from dtbundle.trust.transparency import LogEntry, check_log_body, verify_set


@dataclass
class SignerMaterial:
    """Who signed, as the signature says: nothing (try the policy's keys), or a certificate."""

    cert: x509.Certificate | None = None
    chain: list[x509.Certificate] = field(default_factory=list)  # intermediates brought along


def decode_b64(text: object, what: str) -> bytes:
    """A required base64 field of a signature document."""
    if not isinstance(text, str):
        raise SignatureError(f"{what} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not base64") from None


def check_signer(
    material: SignerMaterial,
    policy: Policy,
    signature: bytes,
    data: bytes | None,
    digest: bytes | None,
    entries: Sequence[LogEntry],
    signed_sha256: str,
    dsse: bool,
) -> str:
    """Verify the signature against the policy; return a description of the signer."""
    if material.cert is None:
        for key in policy.keys:
            if verify_signature(key, signature, data, digest):
                # Key-based signing needs no log; an entry it carries is checked when we can.
                if entries and policy.trusted_root is not None:
                    for entry in entries:
                        verify_set(entry, policy.trusted_root)
                        check_log_body(
                            entry, signature=signature, signed_sha256=signed_sha256, verifier_der=None, dsse=dsse
                        )
                return f"key {key_fingerprint(key)}"
        if not policy.keys:
            raise SignatureError("signed with a key, and no --cosign-key was given")
        raise SignatureError("the signature does not verify with any trusted key")
    cert = material.cert
    if policy.trusted_root is None or not policy.identities:
        raise SignatureError("keyless signature: a --trusted-root and a --certificate-identity policy are needed")
    try:
        public = as_verify_key(cert.public_key())
    except (UnsupportedAlgorithm, ValueError):  # a curve or key type cryptography cannot load
        public = None
    if public is None:
        raise SignatureError("unsupported certificate key type")
    if not verify_signature(public, signature, data, digest):
        raise SignatureError("the signature does not verify with the certificate's key")
    if not entries:
        raise SignatureError("keyless signature without a transparency log entry")
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    for entry in entries:
        # The short-lived certificate must have been valid when Rekor logged the signature.
        at = verify_set(entry, policy.trusted_root)
        check_log_body(entry, signature=signature, signed_sha256=signed_sha256, verifier_der=cert_der, dsse=dsse)
        chain_to_root(cert, material.chain, policy.trusted_root, at)
    subjects, issuer = certificate_identity(cert)
    if not any(identity.matches(subjects, issuer) for identity in policy.identities):
        raise SignatureError(
            f"certificate identity {', '.join(subjects) or '?'} (issuer {issuer}) does not match the policy"
        )
    return f"{subjects[0] if subjects else '?'} (issuer {issuer})"
