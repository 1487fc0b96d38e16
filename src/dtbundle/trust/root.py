"""Sigstore trust material: the parts of a ``trusted_root.json`` that offline verification
uses (Fulcio CA certificates to chain keyless certificates to, Rekor keys to check signed
entry timestamps with). Loaded once from bytes the caller read; no TUF, no network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from dtbundle import jsontext
from dtbundle.errors import UsageError
from dtbundle.oci.digest import sha256_hex
from dtbundle.trust.keys import VerifyKey, as_verify_key


@dataclass(frozen=True)
class TrustedRoot:
    """The parts of a Sigstore ``trusted_root.json`` that offline verification uses."""

    certificates: tuple[x509.Certificate, ...]  # Fulcio CA certificates (roots and intermediates)
    tlog_keys: Mapping[str, VerifyKey]  # Rekor log ID (hex) -> key
    raw: bytes = field(default=b"", repr=False, compare=False)  # the JSON it was read from (export carries it)

    @classmethod
    def from_json(cls, data: bytes, where: str = "trusted root") -> TrustedRoot:
        try:
            document = jsontext.loads(data)
            certs = [
                x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
                for authority in document.get("certificateAuthorities", [])
                for c in authority["certChain"]["certificates"]
            ]
            keys: dict[str, VerifyKey] = {}
            for log in document.get("tlogs", []):
                raw = base64.b64decode(log["publicKey"]["rawBytes"])
                key = as_verify_key(serialization.load_der_public_key(raw))
                if key is not None:
                    # A Rekor log ID is the SHA-256 of its DER public key.
                    keys[sha256_hex(raw)] = key
        except (ValueError, KeyError, TypeError, UnsupportedAlgorithm, binascii.Error):
            raise UsageError(f"{where} is not a Sigstore trusted_root.json") from None
        return cls(tuple(certs), keys, data)
