"""Bundle signing keys: generate, load, sign the catalog, verify its signature.

Keys are Ed25519 (default) or ECDSA P-256, stored as PKCS#8 PEM (private, mode
0600, optionally encrypted with the passphrase in ``DTBUNDLE_KEY_PASSPHRASE``)
and SubjectPublicKeyInfo PEM (public). The signature covers the exact bytes of
``dtbundle.json``, so it can also be checked with OpenSSL (see the bundle spec).
Signing and verification are pure: bytes in, bytes or verdict out.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dtbundle import jsontext
from dtbundle.errors import IntegrityError, LocalIOError, UsageError
from dtbundle.limits import BUNDLE
from dtbundle.trust.keys import key_fingerprint

PASSPHRASE_ENV = "DTBUNDLE_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
SIGNATURE_FORMAT = "dtbundle-signature/v1"
Algorithm = Literal["ed25519", "ecdsa-p256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ed25519", "ecdsa-p256")
_SIG_ALGORITHM = {"ed25519": "ed25519", "ecdsa-p256": "ecdsa-p256-sha256"}

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def key_id(public: PublicKey) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo: a stable key fingerprint (as for cosign keys)."""
    return key_fingerprint(public)


def algorithm_of(key: PrivateKey | PublicKey) -> Algorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise UsageError(f"unsupported key curve {key.curve.name}; use Ed25519 or ECDSA P-256")


@dataclass(frozen=True)
class GeneratedKeys:
    private_path: Path
    public_path: Path
    key_id: str
    algorithm: Algorithm
    encrypted: bool


def generate_keys(
    output_dir: Path,
    algorithm: Algorithm = "ed25519",
    *,
    force: bool = False,
    passphrase: str | None = None,
) -> GeneratedKeys:
    """Write ``dtbundle.key`` (0600) and ``dtbundle.pub`` into ``output_dir``."""
    private: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    )
    key_path, pub_path = output_dir / "dtbundle.key", output_dir / "dtbundle.pub"
    if not force:
        for path in (key_path, pub_path):
            if path.exists():
                raise UsageError(f"{path} already exists; pass --force to replace it")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_private(key_path, private_pem)
        pub_path.write_bytes(public_pem)
    except OSError as exc:
        raise LocalIOError(f"cannot write keys to {output_dir}: {exc.strerror or exc}") from None
    return GeneratedKeys(key_path, pub_path, key_id(private.public_key()), algorithm, bool(passphrase))


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the first byte: never readable by others, even briefly.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_private_key(
    path: Path, passphrase: str | None = None, *, prompt: Callable[[str], str | None] | None = None
) -> PrivateKey:
    """Load a PKCS#8 PEM private key; the passphrase defaults to $DTBUNDLE_KEY_PASSPHRASE.

    An encrypted key without either asks ``prompt`` (the CLI's hidden terminal prompt; it
    returns None where it cannot ask): this module never reads a terminal itself.
    """
    source = "given"
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase, source = os.environ[PASSPHRASE_ENV], f"in {PASSPHRASE_ENV}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    if not passphrase and prompt is not None and b"ENCRYPTED" in data:  # PKCS#8 or traditional PEM
        passphrase, source = prompt(f"Passphrase for signing key {path}: "), "typed"
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        if passphrase:
            raise UsageError(f"signing key {path} is not encrypted; unset {PASSPHRASE_ENV}") from None
        raise UsageError(
            f"signing key {path} is encrypted; set {PASSPHRASE_ENV} to its passphrase (or run at a terminal to type it)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        hint = f" or the passphrase {source} is wrong" if passphrase else ""
        raise UsageError(f"{path} is not a PKCS#8 PEM private key{hint}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"{path} holds an unsupported key type; use Ed25519 or ECDSA P-256")
    algorithm_of(key)
    return key


def load_public_key(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read public key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(f"{path} is not a SubjectPublicKeyInfo PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise UsageError(f"{path} holds an unsupported key type; use Ed25519 or ECDSA P-256")
    algorithm_of(key)
    return key


def sign_catalog(key: PrivateKey, catalog: bytes) -> bytes:
    """The content of ``dtbundle.json.sig`` for these catalog bytes."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(catalog)
    else:
        raw = key.sign(catalog, ec.ECDSA(hashes.SHA256()))
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": _SIG_ALGORITHM[algorithm_of(key)],
        "keyId": key_id(key.public_key()),
        "signature": base64.b64encode(raw).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def verify_catalog(
    keys: list[PublicKey], catalog: bytes, signature_file: bytes, max_bytes: int = BUNDLE.max_signature_file_bytes
) -> str:
    """Return the key id that verifies ``catalog``; raise IntegrityError otherwise."""
    if len(signature_file) > max_bytes:
        raise IntegrityError("bundle signature file is implausibly large: the bundle is corrupt or hostile")
    try:
        document = jsontext.loads(signature_file, dataclasses.replace(BUNDLE.signature_json, max_bytes=max_bytes))
        if not isinstance(document, dict) or document.get("format") != SIGNATURE_FORMAT:
            raise ValueError("unknown signature format")
        algorithm, wanted_id = document["algorithm"], document["keyId"]
        raw = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise IntegrityError("bundle signature file is malformed: the bundle is corrupt or was tampered with") from None
    for key in keys:
        if key_id(key) != wanted_id or _SIG_ALGORITHM[algorithm_of(key)] != algorithm:
            continue
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(raw, catalog)
            else:
                key.verify(raw, catalog, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise IntegrityError(
                f"bundle signature does not verify with key {wanted_id}: the catalog was modified "
                "after signing; do not use this bundle"
            ) from None
        return str(wanted_id)
    trusted = ", ".join(key_id(k) for k in keys) or "none"
    raise IntegrityError(
        f"bundle is signed by key {wanted_id}, which is not among the trusted keys ({trusted}); "
        "pass the matching --public-key"
    )
