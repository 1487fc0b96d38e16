"""Keyless signing certificates (Fulcio): reading them, the identity they certify (subject
alternative names and OIDC issuer), and the chain from a leaf to a CA of the trusted root.

Failures raise :class:`~dtbundle.errors.SignatureError`; the format modules turn it into a
verdict.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from dtbundle.errors import SignatureError
from dtbundle.limits import TRUST
from dtbundle.trust.root import TrustedRoot

# Fulcio's OIDC issuer extensions: v1 holds raw bytes, v2 (preferred) a DER UTF8String.
_OID_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OID_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def pem_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise SignatureError(f"{what} is not a PEM certificate") from None


def certificate_identity(cert: x509.Certificate) -> tuple[list[str], str | None]:
    """The certified identities (URI and e-mail SANs) and the OIDC issuer, if any."""
    subjects: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        subjects += san.get_values_for_type(x509.UniformResourceIdentifier)
        subjects += san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        pass
    issuer = None
    for ext in cert.extensions:
        if ext.oid == _OID_ISSUER_V2 and isinstance(ext.value, x509.UnrecognizedExtension):
            raw = ext.value.value  # DER UTF8String
            issuer = raw[2:].decode("utf-8", "replace") if len(raw) > 2 and raw[0] == 0x0C else None
        elif ext.oid == _OID_ISSUER_V1 and issuer is None and isinstance(ext.value, x509.UnrecognizedExtension):
            issuer = ext.value.value.decode("utf-8", "replace")
    return subjects, issuer


def chain_to_root(
    leaf: x509.Certificate, extra: Sequence[x509.Certificate], root: TrustedRoot, at: datetime.datetime
) -> None:
    """The leaf must chain (through CA certificates, all valid at ``at``) to a certificate of
    the trusted root. Certificates the signature brings along may serve as intermediates,
    never as the anchor."""
    trusted = {c.fingerprint(hashes.SHA256()) for c in root.certificates}
    candidates = [*root.certificates, *extra]
    current = leaf
    for depth in range(TRUST.max_certificate_chain):
        if not (current.not_valid_before_utc <= at <= current.not_valid_after_utc):
            raise SignatureError(
                f"certificate {current.subject.rfc4514_string()} was not valid at {at:%Y-%m-%dT%H:%M:%SZ}"
            )
        if depth > 0:
            try:
                is_ca = current.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise SignatureError(f"{current.subject.rfc4514_string()} is not a CA certificate")
            if current.fingerprint(hashes.SHA256()) in trusted:
                return
        for issuer in candidates:
            if issuer.subject != current.issuer or issuer is current:
                continue
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            current = issuer
            break
        else:
            raise SignatureError("the certificate does not chain to a CA of the trusted root")
    raise SignatureError("the certificate chain is too long")
