"""Image signature verification, offline: cosign simple signing and Sigstore bundles.

Pure: bytes in, a :class:`Verdict` out. Nothing here touches the network; the
trust material (cosign public keys, a Sigstore ``trusted_root.json``) and the
identity policy come from the caller.

Two formats:

* **cosign simple signing** (``sha256-<hex>.sig`` tags): one layer per signature,
  media type ``application/vnd.dev.cosign.simplesigning.v1+json``; the layer blob is
  the payload, the ``dev.cosignproject.cosign/signature`` annotation the base64
  signature over it. Keyless signatures add ``dev.sigstore.cosign/certificate``,
  ``.../chain`` and a Rekor bundle (``dev.sigstore.cosign/bundle``).
* **Sigstore bundles** (``application/vnd.dev.sigstore.bundle.v0.3+json``, how cosign
  v3 stores signatures as OCI 1.1 referrers): a message signature or a DSSE
  envelope carrying an in-toto statement, with a public key hint or a certificate,
  and transparency log entries.

Key-based signatures need no transparency log (``cosign verify --insecure-ignore-tlog
--key``, the Dynatrace vendor flow); when a trusted root is given and the signature
carries a Rekor entry, that entry is verified too. Keyless signatures always need
the trusted root: the certificate must chain to its Fulcio CA, match the identity
policy, and be logged in Rekor (signed entry timestamp) while it was valid.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from dtbundle.errors import UsageError
from dtbundle.oci import COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
BUNDLE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
_OID_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OID_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SIMPLE_SIGNING_TYPE = "cosign container image signature"

VerifyKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class _Fail(Exception):
    """A verification step failed; the message says which and why."""


# -- trust material ------------------------------------------------------------------------------
def key_fingerprint(key: VerifyKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_verify_key(data: bytes, where: str) -> VerifyKey:
    """A cosign public key (PEM SubjectPublicKeyInfo): ECDSA, Ed25519 or RSA."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{where} is not a PEM public key (cosign.pub format)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise UsageError(f"{where} holds an unsupported key type; cosign keys are ECDSA, Ed25519 or RSA")
    return key


@dataclass(frozen=True)
class TrustedRoot:
    """The parts of a Sigstore ``trusted_root.json`` that offline verification uses."""

    certificates: tuple[x509.Certificate, ...]  # Fulcio CA certificates (roots and intermediates)
    tlog_keys: Mapping[str, VerifyKey]  # Rekor log ID (hex) -> key

    @classmethod
    def from_json(cls, data: bytes, where: str = "trusted root") -> TrustedRoot:
        try:
            document = json.loads(data)
            certs = [
                x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
                for authority in document.get("certificateAuthorities", [])
                for c in authority["certChain"]["certificates"]
            ]
            keys: dict[str, VerifyKey] = {}
            for log in document.get("tlogs", []):
                raw = base64.b64decode(log["publicKey"]["rawBytes"])
                key = serialization.load_der_public_key(raw)
                if isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
                    keys[hashlib.sha256(raw).hexdigest()] = key
        except (ValueError, KeyError, TypeError, UnsupportedAlgorithm, binascii.Error):
            raise UsageError(f"{where} is not a Sigstore trusted_root.json") from None
        return cls(tuple(certs), keys)


@dataclass(frozen=True)
class Identity:
    """Who may have signed keylessly: certificate identity and OIDC issuer (exact or regexp)."""

    subject: str | None = None
    subject_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None

    def matches(self, subjects: Sequence[str], issuer: str | None) -> bool:
        ok_subject = any(
            (self.subject is None or s == self.subject)
            and (self.subject_regexp is None or re.fullmatch(self.subject_regexp, s) is not None)
            for s in subjects
        )
        ok_issuer = (self.issuer is None or issuer == self.issuer) and (
            self.issuer_regexp is None or (issuer is not None and re.fullmatch(self.issuer_regexp, issuer) is not None)
        )
        return ok_subject and ok_issuer


@dataclass(frozen=True)
class Policy:
    keys: tuple[VerifyKey, ...] = ()
    trusted_root: TrustedRoot | None = None
    identities: tuple[Identity, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.keys and not (self.trusted_root and self.identities)


@dataclass(frozen=True)
class Verdict:
    valid: bool
    kind: str  # "cosign" or "sigstore-bundle"
    detail: str  # what was verified, or why it failed
    signer: str | None = None  # "key sha256:…" or the certificate identity
    claimed: str | None = None  # the image digest the signature claims

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "kind": self.kind,
            "signer": self.signer,
            "detail": self.detail,
            "claimedDigest": self.claimed,
        }


# -- primitives -----------------------------------------------------------------------------------
def _verify_raw(key: VerifyKey, signature: bytes, data: bytes | None, digest: bytes | None) -> bool:
    """Verify over ``data``, or over its SHA-256 ``digest`` when only that is known."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if data is None:
                return False
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
            if data is not None:
                key.verify(signature, data, ec.ECDSA(algorithm))
            elif isinstance(algorithm, hashes.SHA256) and digest is not None:
                key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            else:
                return False
        else:
            message, scheme = (
                (data, hashes.SHA256()) if data is not None else (digest, utils.Prehashed(hashes.SHA256()))
            )
            if message is None:
                return False
            try:
                key.verify(signature, message, padding.PKCS1v15(), scheme)
            except InvalidSignature:
                pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
                key.verify(signature, message, pss, scheme)
        return True
    except (InvalidSignature, ValueError):
        return False


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise _Fail(f"{what} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Fail(f"{what} is not base64") from None


def _pem_certs(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _Fail(f"{what} is not a PEM certificate") from None


def _cert_identity(cert: x509.Certificate) -> tuple[list[str], str | None]:
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


def _chain_to_root(
    leaf: x509.Certificate, extra: Sequence[x509.Certificate], root: TrustedRoot, at: datetime.datetime
) -> None:
    """The leaf must chain (through CA certificates, all valid at ``at``) to a certificate of
    the trusted root. Certificates the signature brings along may serve as intermediates,
    never as the anchor."""
    trusted = {c.fingerprint(hashes.SHA256()) for c in root.certificates}
    candidates = [*root.certificates, *extra]
    current = leaf
    for depth in range(8):
        if not (current.not_valid_before_utc <= at <= current.not_valid_after_utc):
            raise _Fail(f"certificate {current.subject.rfc4514_string()} was not valid at {at:%Y-%m-%dT%H:%M:%SZ}")
        if depth > 0:
            try:
                is_ca = current.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise _Fail(f"{current.subject.rfc4514_string()} is not a CA certificate")
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
            raise _Fail("the certificate does not chain to a CA of the trusted root")
    raise _Fail("the certificate chain is too long")


@dataclass(frozen=True)
class _LogEntry:
    body: bytes  # the canonicalized body, decoded
    body_b64: str
    integrated_time: int
    log_index: int
    log_id: str  # hex
    set_signature: bytes


def _verify_set(entry: _LogEntry, root: TrustedRoot) -> datetime.datetime:
    """Check the Rekor signed entry timestamp; return the integrated time."""
    key = root.tlog_keys.get(entry.log_id)
    if key is None:
        raise _Fail(f"transparency log {entry.log_id[:16]}… is not in the trusted root")
    payload = json.dumps(
        {
            "body": entry.body_b64,
            "integratedTime": entry.integrated_time,
            "logID": entry.log_id,
            "logIndex": entry.log_index,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if not _verify_raw(key, entry.set_signature, payload, None):
        raise _Fail("the transparency log's signed entry timestamp does not verify")
    return datetime.datetime.fromtimestamp(entry.integrated_time, datetime.UTC)


def _check_body(
    entry: _LogEntry, *, signature: bytes, signed_sha256: str, verifier_der: bytes | None, dsse: bool
) -> None:
    """The log entry must record this very signature, content and certificate/key."""
    try:
        body = json.loads(entry.body)
        kind, spec = body["kind"], body["spec"]
        if kind == "hashedrekord" and not dsse:
            logged_hash = spec["data"]["hash"]["value"]
            logged_sig = base64.b64decode(spec["signature"]["content"])
            logged_key = base64.b64decode(spec["signature"]["publicKey"]["content"])
        elif kind == "dsse" and dsse:
            logged_hash = spec["payloadHash"]["value"]
            found = [s for s in spec["signatures"] if base64.b64decode(s["signature"]) == signature]
            if not found:
                raise _Fail("the transparency log entry records another signature")
            logged_sig, logged_key = signature, base64.b64decode(found[0]["verifier"])
        else:
            raise _Fail(f"unsupported transparency log entry kind {kind!r}")
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _Fail("the transparency log entry body is malformed") from None
    if logged_hash != signed_sha256:
        raise _Fail("the transparency log entry records other content")
    if logged_sig != signature:
        raise _Fail("the transparency log entry records another signature")
    if verifier_der is not None and _der_of(logged_key) != verifier_der:
        raise _Fail("the transparency log entry records another certificate or key")


def _der_of(pem_or_der: bytes) -> bytes:
    if b"-----BEGIN CERTIFICATE-----" in pem_or_der:
        return x509.load_pem_x509_certificate(pem_or_der).public_bytes(serialization.Encoding.DER)
    if b"-----BEGIN" in pem_or_der:
        return serialization.load_pem_public_key(pem_or_der).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return pem_or_der


@dataclass
class _Material:
    """Who signed: keys to try, or a certificate (keyless)."""

    cert: x509.Certificate | None = None
    chain: list[x509.Certificate] = field(default_factory=list)


def _check_signer(
    material: _Material,
    policy: Policy,
    signature: bytes,
    data: bytes | None,
    digest: bytes | None,
    entries: list[_LogEntry],
    signed_sha256: str,
    dsse: bool,
) -> str:
    """Verify the signature against the policy; return a description of the signer."""
    if material.cert is None:
        for key in policy.keys:
            if _verify_raw(key, signature, data, digest):
                if entries and policy.trusted_root is not None:
                    for entry in entries:
                        _verify_set(entry, policy.trusted_root)
                        _check_body(
                            entry, signature=signature, signed_sha256=signed_sha256, verifier_der=None, dsse=dsse
                        )
                return f"key {key_fingerprint(key)}"
        if not policy.keys:
            raise _Fail("signed with a key, and no --cosign-key was given")
        raise _Fail("the signature does not verify with any trusted key")
    cert = material.cert
    if policy.trusted_root is None or not policy.identities:
        raise _Fail("keyless signature: a --trusted-root and a --certificate-identity policy are needed")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise _Fail("unsupported certificate key type")
    if not _verify_raw(public, signature, data, digest):
        raise _Fail("the signature does not verify with the certificate's key")
    if not entries:
        raise _Fail("keyless signature without a transparency log entry")
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    for entry in entries:
        at = _verify_set(entry, policy.trusted_root)
        _check_body(entry, signature=signature, signed_sha256=signed_sha256, verifier_der=cert_der, dsse=dsse)
        _chain_to_root(cert, material.chain, policy.trusted_root, at)
    subjects, issuer = _cert_identity(cert)
    if not any(identity.matches(subjects, issuer) for identity in policy.identities):
        raise _Fail(f"certificate identity {', '.join(subjects) or '?'} (issuer {issuer}) does not match the policy")
    return f"{subjects[0] if subjects else '?'} (issuer {issuer})"


# -- cosign simple signing -------------------------------------------------------------------------------
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
        if layer_digest is not None and not hmac.compare_digest(
            "sha256:" + hashlib.sha256(payload).hexdigest(), layer_digest
        ):
            raise _Fail("payload does not match its layer digest")
        signature = _b64(annotations.get(COSIGN_SIGNATURE_ANNOTATION), "signature annotation")
        try:
            document = json.loads(payload)
            critical = document["critical"]
            claimed = str(critical["image"]["docker-manifest-digest"])
            kind = critical.get("type")
        except (ValueError, KeyError, TypeError):
            raise _Fail("payload is not a cosign simple signing document") from None
        if kind != _SIMPLE_SIGNING_TYPE:
            raise _Fail(f"payload type {kind!r} is not a cosign image signature")
        material = _Material()
        entries: list[_LogEntry] = []
        if CERTIFICATE_ANNOTATION in annotations:
            material.cert = _pem_certs(annotations[CERTIFICATE_ANNOTATION].encode(), "certificate annotation")[0]
            if annotations.get(CHAIN_ANNOTATION):
                material.chain = _pem_certs(annotations[CHAIN_ANNOTATION].encode(), "chain annotation")
        if REKOR_BUNDLE_ANNOTATION in annotations:
            entries.append(_legacy_entry(annotations[REKOR_BUNDLE_ANNOTATION]))
        signer = _check_signer(
            material, policy, signature, payload, None, entries, hashlib.sha256(payload).hexdigest(), dsse=False
        )
        if image_digest is not None and claimed != image_digest:
            raise _Fail(f"signature is for {claimed}, not for {image_digest}")
        return Verdict(True, "cosign", "signature verified", signer, claimed)
    except _Fail as exc:
        return Verdict(False, "cosign", str(exc), None, claimed)


def _legacy_entry(text: str) -> _LogEntry:
    try:
        bundle = json.loads(text)
        payload = bundle["Payload"]
        return _LogEntry(
            body=base64.b64decode(payload["body"]),
            body_b64=payload["body"],
            integrated_time=int(payload["integratedTime"]),
            log_index=int(payload["logIndex"]),
            log_id=str(payload["logID"]),
            set_signature=base64.b64decode(bundle["SignedEntryTimestamp"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _Fail("the Rekor bundle annotation is malformed") from None


# -- Sigstore bundles --------------------------------------------------------------------------------
def verify_sigstore_bundle(data: bytes, *, image_digest: str | None, artifact: bytes | None, policy: Policy) -> Verdict:
    """A Sigstore bundle over ``artifact`` (bytes) or an image (its digest)."""
    claimed: str | None = None
    try:
        try:
            bundle = json.loads(data)
            media_type = bundle["mediaType"]
            material_json = bundle["verificationMaterial"]
        except (ValueError, KeyError, TypeError):
            raise _Fail("not a Sigstore bundle") from None
        if media_type not in BUNDLE_MEDIA_TYPES:
            raise _Fail(f"unsupported Sigstore bundle media type {media_type!r}")
        material = _Material()
        if "certificate" in material_json:
            material.cert = x509.load_der_x509_certificate(
                _b64(material_json["certificate"].get("rawBytes"), "certificate")
            )
        elif "x509CertificateChain" in material_json:
            chain = [
                x509.load_der_x509_certificate(_b64(c.get("rawBytes"), "certificate"))
                for c in material_json["x509CertificateChain"].get("certificates", [])
            ]
            if not chain:
                raise _Fail("empty certificate chain")
            material.cert, material.chain = chain[0], chain[1:]
        elif "publicKey" not in material_json:
            raise _Fail("bundle has neither a certificate nor a public key")
        entries = [_bundle_entry(e) for e in material_json.get("tlogEntries", [])]
        expected = (
            hashlib.sha256(artifact).hexdigest()
            if artifact is not None
            else (image_digest.split(":", 1)[1] if image_digest and image_digest.startswith("sha256:") else None)
        )
        if expected is None:
            raise _Fail("nothing to verify the bundle against")
        if "messageSignature" in bundle:
            message = bundle["messageSignature"]
            digest = _b64(message.get("messageDigest", {}).get("digest"), "message digest")
            claimed = "sha256:" + digest.hex()
            if message.get("messageDigest", {}).get("algorithm") != "SHA2_256" or digest.hex() != expected:
                raise _Fail(f"bundle signs {claimed}, not sha256:{expected}")
            signature = _b64(message.get("signature"), "signature")
            signer = _check_signer(material, policy, signature, artifact, digest, entries, digest.hex(), dsse=False)
        elif "dsseEnvelope" in bundle:
            envelope = bundle["dsseEnvelope"]
            payload = _b64(envelope.get("payload"), "DSSE payload")
            payload_type = str(envelope.get("payloadType", ""))
            signatures = envelope.get("signatures") or []
            if len(signatures) != 1:
                raise _Fail("a DSSE envelope must carry exactly one signature")
            signature = _b64(signatures[0].get("sig"), "DSSE signature")
            pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)
            signer = _check_signer(
                material, policy, signature, pae, None, entries, hashlib.sha256(payload).hexdigest(), dsse=True
            )
            claimed = _intoto_subject(payload, payload_type, expected)
        else:
            raise _Fail("bundle has no message signature or DSSE envelope")
        return Verdict(True, "sigstore-bundle", "bundle verified", signer, claimed)
    except _Fail as exc:
        return Verdict(False, "sigstore-bundle", str(exc), None, claimed)
    except (ValueError, TypeError, AttributeError):
        return Verdict(False, "sigstore-bundle", "malformed Sigstore bundle", None, claimed)


def _bundle_entry(entry: Mapping[str, Any]) -> _LogEntry:
    try:
        promise = entry["inclusionPromise"]["signedEntryTimestamp"]
        return _LogEntry(
            body=base64.b64decode(entry["canonicalizedBody"]),
            body_b64=entry["canonicalizedBody"],
            integrated_time=int(entry["integratedTime"]),
            log_index=int(entry["logIndex"]),
            log_id=base64.b64decode(entry["logId"]["keyId"]).hex(),
            set_signature=base64.b64decode(promise),
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _Fail("a transparency log entry lacks its signed entry timestamp") from None


def _intoto_subject(payload: bytes, payload_type: str, expected_hex: str) -> str:
    if payload_type != "application/vnd.in-toto+json":
        raise _Fail(f"DSSE payload type {payload_type!r} is not an in-toto statement")
    try:
        statement = json.loads(payload)
        digests = [s["digest"].get("sha256") for s in statement["subject"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _Fail("the in-toto statement is malformed") from None
    if expected_hex not in digests:
        raise _Fail(f"the in-toto statement's subject is not sha256:{expected_hex}")
    return f"sha256:{expected_hex}"
