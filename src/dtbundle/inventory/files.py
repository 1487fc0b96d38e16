"""The inventory file and its signature on disk: read bounded, written atomically.

``inv.json`` is written to a temporary file beside it and renamed into place when complete;
with a signing key, ``inv.json.sig`` is the bundle catalog's detached signature format
(:func:`dtbundle.bundle.key.sign_catalog`) over the file's exact bytes. An existing output (or
signature) is replaced only with ``force``; a stale signature of an inventory replaced without
a key is removed, so a signature never sits beside bytes it does not cover.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dtbundle.bundle.key import PrivateKey, PublicKey, key_id, sign_catalog, verify_catalog
from dtbundle.errors import IntegrityError, LocalIOError, UsageError
from dtbundle.inventory.model import Inventory, parse_inventory
from dtbundle.limits import BUNDLE, MAX_INVENTORY_BYTES

SIGNATURE_SUFFIX = ".sig"


def signature_path(path: Path) -> Path:
    """``inv.json`` -> ``inv.json.sig``."""
    return path.with_name(path.name + SIGNATURE_SUFFIX)


@dataclass(frozen=True)
class WrittenInventory:
    path: Path
    signature: Path | None  # None: written without a signing key
    key_id: str | None  # the signing key's id, sha256:<hex>


def load_inventory(path: Path, keys: list[PublicKey] | None) -> Inventory:
    """Read and validate ``path``; with ``keys``, ``<path>.sig`` must exist and verify with one of them
    (else IntegrityError, exit 3). A missing or unusable file is a UsageError (exit 2)."""
    data = _read(path, MAX_INVENTORY_BYTES, "inventory")
    if keys is not None:
        sig_path = signature_path(path)
        if not sig_path.exists():
            raise IntegrityError(
                f"inventory {path} has no signature {sig_path.name} beside it, and a public key was given to "
                "check it with: copy the .sig file along, or take the inventory again with --signing-key"
            )
        signature = _read(sig_path, BUNDLE.max_signature_file_bytes, "inventory signature")
        try:
            verify_catalog(keys, data, signature, BUNDLE.max_signature_file_bytes)
        except IntegrityError:  # its wording is the bundle's: say what it means for an inventory
            trusted = ", ".join(key_id(k) for k in keys) or "none"
            raise IntegrityError(
                f"inventory {path}: its signature {sig_path.name} does not verify with the trusted key(s) "
                f"({trusted}): it was changed after signing, or signed with another key; take it again, "
                "or pass the public key it was signed with"
            ) from None
    return parse_inventory(data, source=f"inventory {path}")


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise UsageError(f"{what} {path} is not a regular file; save it to a file first")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(
            f"{what} {path} does not exist; take one with 'dtbundle inventory' on the air-gapped side"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory; name the inventory file") from None
    except OSError as exc:
        raise LocalIOError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(
            f"{what} {path} is larger than the limit of {limit} bytes, so it is not one dtbundle wrote; "
            "take the inventory again (for fewer repositories, with --repository, if it is that large)"
        )
    return data


def check_output(path: Path, force: bool) -> None:
    """Refuse, before any registry is asked, an existing output (or signature) without ``force``
    and a directory where nothing can be created."""
    for existing in (path, signature_path(path)):
        if existing.is_dir():
            raise UsageError(f"{existing} is a directory; give --output a file name")
        if existing.exists() and not force:
            raise UsageError(f"{existing} already exists; pass --force to replace it")
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"directory {directory} does not exist; create it or choose another --output")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    except OSError as exc:
        raise LocalIOError(f"cannot write in {directory}: {exc.strerror or exc}; choose another --output") from None
    os.close(fd)
    os.unlink(probe)


def write_inventory(
    inventory: Inventory, path: Path, *, force: bool, signing_key: PrivateKey | None = None
) -> WrittenInventory:
    """Write ``inventory`` (and its signature, with ``signing_key``) atomically."""
    check_output(path, force)
    data = inventory.to_bytes()
    sig_path = signature_path(path)
    signature = sign_catalog(signing_key, data) if signing_key is not None else None
    _write_atomically(path, data)
    if signature is not None:
        _write_atomically(sig_path, signature)
    else:
        with contextlib.suppress(FileNotFoundError):
            sig_path.unlink()  # a signature of the inventory this replaced
    return WrittenInventory(
        path,
        sig_path if signature is not None else None,
        key_id(signing_key.public_key()) if signing_key is not None else None,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a reader never sees half a file."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise LocalIOError(f"cannot write in {path.parent}: {exc.strerror or exc}; choose another --output") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600: an inventory holds no secret, and travels
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise LocalIOError(f"cannot write {path}: {exc.strerror or exc}; choose another --output") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
