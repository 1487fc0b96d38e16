"""Content digests: the one digest grammar, hashing and verification helpers (pure).

A digest is ``algorithm:hex``; dtbundle carries sha256 and sha512 (lower-case hex of
the algorithm's length). Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from dtbundle.errors import DigestMismatchError, RegistryProtocolError

ALGORITHM_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
DIGEST_PATTERN = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
SHA256_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
SHA256_HEX_PATTERN = re.compile(r"[0-9a-f]{64}")


def is_digest(text: str) -> bool:
    return DIGEST_PATTERN.fullmatch(text) is not None


def check_digest(text: str) -> str:
    """Return ``text`` if it is a sha256/sha512 digest, else raise."""
    if not is_digest(text):
        raise RegistryProtocolError(f"malformed or unsupported digest {text[:80]!r}")
    return text


def new_hasher(digest: str) -> Any:
    """A hashlib object of the digest's algorithm."""
    return hashlib.new(check_digest(digest).split(":", 1)[0])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + sha256_hex(data)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


def hexdigest_of(hasher: Any, digest: str) -> str:
    """``algorithm:hex`` of a finished hasher, in the algorithm of ``digest``."""
    return f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"


def digest_matches(data: bytes, digest: str) -> bool:
    algorithm = check_digest(digest).split(":", 1)[0]
    return hmac.compare_digest(compute_digest(data, algorithm), digest)


def verify_bytes(data: bytes, digest: str, what: str) -> None:
    """Raise DigestMismatchError unless ``data`` hashes to ``digest``."""
    if not digest_matches(data, digest):
        actual = compute_digest(data, digest.split(":", 1)[0])
        raise DigestMismatchError(f"{what}: content has digest {actual}, expected {digest}")


def blob_path(digest: str) -> str:
    """``sha256:abc`` -> ``blobs/sha256/abc``: where an OCI image layout keeps the content."""
    algorithm, _, encoded = check_digest(digest).partition(":")
    return f"blobs/{algorithm}/{encoded}"


def referrers_tag(digest: str) -> str:
    """The referrers tag schema / cosign tag prefix: ``sha256:abc`` -> ``sha256-abc``."""
    return check_digest(digest).replace(":", "-", 1)
