"""Bundle keys, the catalog signature, and the verifying reader against tampered bundles."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from dtbundle.bundle.format import parse_catalog
from dtbundle.bundle.key import (
    PASSPHRASE_ENV,
    generate_keys,
    key_id,
    load_private_key,
    load_public_key,
    sign_catalog,
    verify_catalog,
)
from dtbundle.bundle.reader import open_bundle, verify_bundle
from dtbundle.errors import IntegrityError, UsageError
from dtbundle.limits import BundleLimits
from tests.support.bundles import flip_byte, read_entries, write_entries
from tests.support.registries import Exported

# -- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_keygen_writes_pkcs8_0600_and_spki(tmp_path: Path, algorithm: str) -> None:
    keys = generate_keys(tmp_path, algorithm)  # type: ignore[arg-type]
    assert stat.S_IMODE(keys.private_path.stat().st_mode) == 0o600
    assert keys.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    private, public = load_private_key(keys.private_path), load_public_key(keys.public_path)
    assert key_id(private.public_key()) == key_id(public) == keys.key_id
    assert verify_catalog([public], b"catalog", sign_catalog(private, b"catalog")) == keys.key_id


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = generate_keys(tmp_path)
    with pytest.raises(UsageError) as info:
        generate_keys(tmp_path)
    assert "--force" in str(info.value)
    assert generate_keys(tmp_path, force=True).key_id != first.key_id


def test_encrypted_key_needs_its_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = generate_keys(tmp_path, passphrase="open sesame")
    assert keys.private_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with pytest.raises(UsageError) as info:
        load_private_key(keys.private_path)
    assert PASSPHRASE_ENV in str(info.value)
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(UsageError):
        load_private_key(keys.private_path)
    monkeypatch.setenv(PASSPHRASE_ENV, "open sesame")
    assert key_id(load_private_key(keys.private_path).public_key()) == keys.key_id


def test_signature_rejects_other_key_and_modified_catalog(tmp_path: Path) -> None:
    a, b = generate_keys(tmp_path / "a"), generate_keys(tmp_path / "b", "ecdsa-p256")
    signature = sign_catalog(load_private_key(a.private_path), b"{}")
    with pytest.raises(IntegrityError) as info:
        verify_catalog([load_public_key(b.public_path)], b"{}", signature)
    assert a.key_id in str(info.value) and "not among the trusted keys" in str(info.value)
    with pytest.raises(IntegrityError):
        verify_catalog([load_public_key(a.public_path)], b"{ }", signature)
    for junk in (b"", b"not json", b'{"format": "other"}', b'{"format": "dtbundle-signature/v1"}'):
        with pytest.raises(IntegrityError):
            verify_catalog([load_public_key(a.public_path)], b"{}", junk)


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_openssl_verifies_the_catalog_signature_as_the_spec_says(tmp_path: Path, algorithm: str) -> None:
    keys = generate_keys(tmp_path, algorithm)  # type: ignore[arg-type]
    catalog = b'{"formatVersion": 1}\n'
    (tmp_path / "dtbundle.json").write_bytes(catalog)
    document = json.loads(sign_catalog(load_private_key(keys.private_path), catalog))
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(document["signature"]))
    if algorithm == "ed25519":
        cmd = [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(keys.public_path),
            "-rawin",
            "-in",
            str(tmp_path / "dtbundle.json"),
            "-sigfile",
            str(tmp_path / "sig.bin"),
        ]
    else:
        cmd = [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(keys.public_path),
            "-signature",
            str(tmp_path / "sig.bin"),
            str(tmp_path / "dtbundle.json"),
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and "Verified" in proc.stdout + proc.stderr, proc.stderr


# -- the verifying reader -------------------------------------------------------------------------


def test_good_bundle_verifies(exported: Exported) -> None:
    result = verify_bundle(exported.path, [load_public_key(exported.pub)])
    assert result.files == len(result.catalog.files)
    assert result.bytes == result.catalog.total_size


def _tampered(exported: Exported, tmp_path: Path, change: str) -> Path:
    entries = read_entries(exported.path)
    names = [n for n, _ in entries]
    if change == "blob-byte":
        i = max(range(len(entries)), key=lambda n: len(entries[n][1]))  # the largest layer
        entries[i] = (entries[i][0], flip_byte(entries[i][1], len(entries[i][1]) // 2))
    elif change == "catalog-byte":
        catalog = entries[0][1].replace(b'"totalSize": ', b'"totalSize":  ')
        entries[0] = (entries[0][0], catalog)
    elif change == "signature-byte":
        document = json.loads(entries[1][1])
        raw = bytearray(base64.b64decode(document["signature"]))
        raw[5] ^= 1
        document["signature"] = base64.b64encode(bytes(raw)).decode()
        entries[1] = (entries[1][0], json.dumps(document).encode())
    elif change == "entry-removed":
        del entries[names.index("index.json") + 3]
    elif change == "entry-added":
        entries.append(("blobs/sha256/" + "0" * 64, b"extra"))
    elif change == "entry-added-before-end":
        entries.insert(5, ("notes.txt", b"hello"))
    elif change == "entries-reordered":
        entries[4], entries[5] = entries[5], entries[4]
    elif change == "catalog-missing":
        del entries[0]
    out = tmp_path / f"{change}.tar.zst"
    write_entries(out, entries)
    return out


CHANGES = [
    "blob-byte",
    "catalog-byte",
    "signature-byte",
    "entry-removed",
    "entry-added",
    "entry-added-before-end",
    "entries-reordered",
    "catalog-missing",
]


@pytest.mark.parametrize("change", CHANGES)
def test_tampered_bundles_fail_verification(exported: Exported, tmp_path: Path, change: str) -> None:
    bad = _tampered(exported, tmp_path, change)
    with pytest.raises(IntegrityError) as info:
        verify_bundle(bad, [load_public_key(exported.pub)])
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


def test_untampered_rewrite_still_verifies(exported: Exported, tmp_path: Path) -> None:
    # The control for the tamper tests: rewriting the same entries with another tar writer
    # (other headers, mtimes, compression) keeps the bundle valid.
    out = tmp_path / "rewritten.tar.zst"
    write_entries(out, read_entries(exported.path))
    assert verify_bundle(out, [load_public_key(exported.pub)]).files > 0


@pytest.mark.parametrize("cut", [0.99, 0.5, 0.01])
def test_truncated_bundle_fails(exported: Exported, tmp_path: Path, cut: float) -> None:
    data = exported.path.read_bytes()
    bad = tmp_path / "cut.tar.zst"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(IntegrityError):
        verify_bundle(bad, [load_public_key(exported.pub)])


def test_garbage_after_the_bundle_fails(exported: Exported, tmp_path: Path) -> None:
    bad = tmp_path / "tail.tar.zst"
    bad.write_bytes(exported.path.read_bytes() + b"trailing junk")
    with pytest.raises(IntegrityError):
        verify_bundle(bad, [load_public_key(exported.pub)])


def test_not_a_bundle(tmp_path: Path, exported: Exported) -> None:
    other = tmp_path / "x.tar.zst"
    other.write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(IntegrityError) as info:
        verify_bundle(other, [load_public_key(exported.pub)])
    assert "not a zstd" in str(info.value)


def test_wrong_key_fails(exported: Exported, tmp_path: Path) -> None:
    other = generate_keys(tmp_path)
    with pytest.raises(IntegrityError) as info:
        verify_bundle(exported.path, [load_public_key(other.public_path)])
    assert "not among the trusted keys" in str(info.value)


def test_signed_but_hostile_catalog_is_rejected(exported: Exported, tmp_path: Path) -> None:
    # Even a validly signed catalog is checked: a path outside the allowed names is refused.
    entries = read_entries(exported.path)
    catalog = json.loads(entries[0][1])
    catalog["files"][2]["path"] = "../../etc/passwd"
    data = json.dumps(catalog).encode()
    entries[0] = ("dtbundle.json", data)
    entries[1] = ("dtbundle.json.sig", sign_catalog(load_private_key(exported.key), data))
    bad = tmp_path / "hostile.tar.zst"
    write_entries(bad, entries)
    with pytest.raises(IntegrityError) as info:
        verify_bundle(bad, [load_public_key(exported.pub)])
    assert "not an allowed entry name" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(formatVersion=3), "format version"),
        (lambda c: c.update(totalSize=1), "totalSize"),
        (lambda c: c["images"][0].update(repository="UPPER/case"), "invalid registry"),
        (lambda c: c["images"][0].update(digest="sha256:" + "0" * 64), "not in the bundle"),
        (lambda c: c["artifacts"][0].update(kind="surprise"), "unknown"),
        (lambda c: c["artifacts"][0].update(kind=[]), "unknown"),  # not a string: still exit 3, not a crash
        (lambda c: c["artifacts"][0].update(kind={"a": 1}), "unknown"),
        (lambda c: c["images"][0].update(platforms="linux/amd64"), "not a list"),
        (lambda c: c["images"][0].update(size=True), "not a int"),
        (lambda c: c["files"].append(dict(c["files"][3])), "listed twice"),
    ],
)
def test_catalog_validation(exported: Exported, mutate: object, message: str) -> None:
    with open_bundle(exported.path, None) as reader:
        catalog = json.loads(reader.catalog_bytes)
    mutate(catalog)  # type: ignore[operator]
    with pytest.raises(IntegrityError) as info:
        parse_catalog(json.dumps(catalog).encode(), BundleLimits())
    assert message in str(info.value)


def test_limits_are_enforced(exported: Exported) -> None:
    with pytest.raises(IntegrityError):
        verify_bundle(exported.path, [load_public_key(exported.pub)], BundleLimits(max_files=3))
    with pytest.raises(IntegrityError):
        verify_bundle(exported.path, [load_public_key(exported.pub)], BundleLimits(max_catalog_bytes=100))


def test_standard_tools_unpack_it(exported: Exported, tmp_path: Path) -> None:
    sidecar = exported.path.name + ".sha256"
    check = subprocess.run(["sha256sum", "-c", sidecar], cwd=exported.path.parent, capture_output=True, timeout=30)
    assert check.returncode == 0 and check.stdout.decode().strip() == f"{exported.path.name}: OK"
    shutil.copy(exported.path, tmp_path / "b.tar.zst")
    os.mkdir(tmp_path / "x")
    subprocess.run("zstd -dc b.tar.zst | tar -x -C x", shell=True, cwd=tmp_path, check=True, timeout=60)  # noqa: S602
    assert (tmp_path / "x" / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
