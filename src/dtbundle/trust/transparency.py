"""Rekor transparency log entries, offline: the entry as cosign (Rekor bundle annotation) and
Sigstore bundles (``tlogEntries``) carry it, its signed entry timestamp (SET), and the check
that the logged body records this very signature, content and certificate or key.

No inclusion proofs against a checkpoint: the SET, signed by a Rekor key of the trusted root,
is the promise of inclusion. Failures raise :class:`~dtbundle.errors.SignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtbundle import jsontext
from dtbundle.errors import SignatureError
from dtbundle.trust.keys import verify_signature
from dtbundle.trust.root import TrustedRoot


@dataclass(frozen=True)
class LogEntry:
    """One Rekor entry with its signed entry timestamp."""

    body: bytes  # the canonicalized body, decoded
    body_b64: str
    integrated_time: int
    log_index: int
    log_id: str  # hex
    set_signature: bytes

    @classmethod
    def from_cosign_bundle(cls, text: str) -> LogEntry:
        """The ``dev.sigstore.cosign/bundle`` annotation of a cosign signature layer."""
        try:
            bundle = jsontext.loads(text)
            payload = bundle["Payload"]
            return cls(
                body=base64.b64decode(payload["body"]),
                body_b64=payload["body"],
                integrated_time=int(payload["integratedTime"]),
                log_index=int(payload["logIndex"]),
                log_id=str(payload["logID"]),
                set_signature=base64.b64decode(bundle["SignedEntryTimestamp"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SignatureError("the Rekor bundle annotation is malformed") from None

    @classmethod
    def from_sigstore_bundle(cls, entry: Mapping[str, Any]) -> LogEntry:
        """One ``verificationMaterial.tlogEntries`` item of a Sigstore bundle."""
        try:
            promise = entry["inclusionPromise"]["signedEntryTimestamp"]
            return cls(
                body=base64.b64decode(entry["canonicalizedBody"]),
                body_b64=entry["canonicalizedBody"],
                integrated_time=int(entry["integratedTime"]),
                log_index=int(entry["logIndex"]),
                log_id=base64.b64decode(entry["logId"]["keyId"]).hex(),
                set_signature=base64.b64decode(promise),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise SignatureError("a transparency log entry lacks its signed entry timestamp") from None


def verify_set(entry: LogEntry, root: TrustedRoot) -> datetime.datetime:
    """Check the Rekor signed entry timestamp; return the integrated time."""
    key = root.tlog_keys.get(entry.log_id)
    if key is None:
        raise SignatureError(f"transparency log {entry.log_id[:16]}… is not in the trusted root")
    # Rekor signs the canonical JSON (sorted keys, no spaces) of these four fields.
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
    if not verify_signature(key, entry.set_signature, payload, None):
        raise SignatureError("the transparency log's signed entry timestamp does not verify")
    return datetime.datetime.fromtimestamp(entry.integrated_time, datetime.UTC)


def check_log_body(
    entry: LogEntry, *, signature: bytes, signed_sha256: str, verifier_der: bytes | None, dsse: bool
) -> None:
    """The log entry must record this very signature, content and certificate/key."""
    try:
        body = jsontext.loads(entry.body)
        kind, spec = body["kind"], body["spec"]
        if kind == "hashedrekord" and not dsse:
            logged_hash = spec["data"]["hash"]["value"]
            logged_sig = base64.b64decode(spec["signature"]["content"])
            logged_key = base64.b64decode(spec["signature"]["publicKey"]["content"])
        elif kind == "dsse" and dsse:
            logged_hash = spec["payloadHash"]["value"]
            found = [s for s in spec["signatures"] if base64.b64decode(s["signature"]) == signature]
            if not found:
                raise SignatureError("the transparency log entry records another signature")
            logged_sig, logged_key = signature, base64.b64decode(found[0]["verifier"])
        else:
            raise SignatureError(f"unsupported transparency log entry kind {kind!r}")
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise SignatureError("the transparency log entry body is malformed") from None
    if logged_hash != signed_sha256:
        raise SignatureError("the transparency log entry records other content")
    if logged_sig != signature:
        raise SignatureError("the transparency log entry records another signature")
    if verifier_der is not None and _der_of(logged_key) != verifier_der:
        raise SignatureError("the transparency log entry records another certificate or key")


def _der_of(pem_or_der: bytes) -> bytes:
    """Rekor logs the verifier as a PEM certificate, a PEM key or DER: compare it as DER."""
    if b"-----BEGIN CERTIFICATE-----" in pem_or_der:
        return x509.load_pem_x509_certificate(pem_or_der).public_bytes(serialization.Encoding.DER)
    if b"-----BEGIN" in pem_or_der:
        return serialization.load_pem_public_key(pem_or_der).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return pem_or_der
