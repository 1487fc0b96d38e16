"""Property-based fuzzing of everything that reads a bundle: the JSON bounds, the catalog parser,
the signature-file parser and the streaming reader on mutated real bundles. Whatever the input,
the outcome is a result or a :class:`DtbundleError` (a one-line message and an exit code), never
another exception: no traceback, no internal error, no unbounded work.

A short, deterministic run here; ``scripts/fuzz.sh`` runs the same properties with many more
(random) examples: ``DTBUNDLE_FUZZ_EXAMPLES=N`` sets how many per property.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtbundle import jsontext, oci
from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME, parse_catalog
from dtbundle.bundle.key import generate_keys, load_private_key, load_public_key, sign_catalog, verify_catalog
from dtbundle.bundle.reader import open_bundle, verify_bundle
from dtbundle.errors import DtbundleError, IntegrityError
from dtbundle.limits import BundleLimits, JsonLimits

FUZZING = "DTBUNDLE_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(
    max_examples=int(os.environ.get("DTBUNDLE_FUZZ_EXAMPLES", "200")),
    deadline=None if FUZZING else 2000,  # ms per example
    derandomize=not FUZZING,  # CI: the same examples every run; scripts/fuzz.sh: new ones every run
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = BundleLimits()


# -- a small real bundle, built without a registry --------------------------------------------------------
def _blob(data: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(data).hexdigest(), data


def _sample() -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The entries of a valid bundle (an image and its cosign signature) and its catalog."""
    config, layer = _blob(b'{"architecture":"amd64","os":"linux"}'), _blob(b"layer data" * 100)
    manifest = _blob(json.dumps({
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{config[0]}",
                   "size": len(config[1])},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{layer[0]}",
                    "size": len(layer[1])}],
    }).encode())  # fmt: skip
    signature = _blob(manifest[1][:-1] + b', "annotations": {"cosign": "signature"}}')
    blobs = [manifest, signature, config, layer]
    root = {"mediaType": oci.OCI_MANIFEST, "digest": f"sha256:{manifest[0]}", "size": len(manifest[1])}
    index = json.dumps({"schemaVersion": 2, "manifests": [root]}).encode()
    files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    files += [(f"blobs/sha256/{h}", d) for h, d in blobs]
    record = {"mediaType": oci.OCI_MANIFEST, "size": len(manifest[1]), "digest": f"sha256:{manifest[0]}"}
    catalog = {
        "formatVersion": 1, "created": "2026-01-01T00:00:00Z", "tool": {"name": "dtbundle", "version": "0"},
        "images": [{"source": "registry.test/team/app:1.0", "registry": "registry.test", "repository": "team/app",
                    "tag": "1.0", **record, "refName": "registry.test/team/app:1.0", "platforms": [],
                    "originalDigest": None, "annotations": {"a": "b"}}],
        "artifacts": [{"kind": "cosign.sig", "registry": "registry.test", "repository": "team/app",
                       "tag": f"sha256-{manifest[0]}.sig", "subject": f"sha256:{manifest[0]}",
                       "digest": f"sha256:{signature[0]}", "mediaType": oci.OCI_MANIFEST, "size": len(signature[1]),
                       "artifactType": None, "refName": None}],
        "files": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files],
        "totalSize": sum(len(d) for _, d in files),
    }  # fmt: skip
    return files, catalog


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keys = tmp_path_factory.mktemp("fuzz-keys")
    generate_keys(keys)
    files, catalog = _sample()
    catalog_bytes = json.dumps(catalog, indent=1).encode()
    signature = sign_catalog(load_private_key(keys / "dtbundle.key"), catalog_bytes)
    entries = [(CATALOG_NAME, catalog_bytes), (SIGNATURE_NAME, signature), *files]
    key = load_public_key(keys / "dtbundle.pub")
    tar = _tar(entries)
    path = tmp_path_factory.mktemp("fuzz-bundle") / "sample.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(tar))
    assert verify_bundle(path, [key]).files == len(files)  # the unmutated bundle is valid
    return {"catalog": catalog, "catalog_bytes": catalog_bytes, "signature": signature, "entries": entries,
            "tar": tar, "key": key}  # fmt: skip


def _tar(entries: list[tuple[str, bytes]], extra: tarfile.TarInfo | None = None, at: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n, (name, data) in enumerate(entries):
            if extra is not None and n == at:
                tar.addfile(extra, io.BytesIO(b"\0" * extra.size))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if n < 2:  # pax headers (fields a reader ignores), so that mutations reach the pax parser
                info.pax_headers = {"comment": "fuzz", "mtime": "1700000000.5"}
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -- strategies -----------------------------------------------------------------------------------------------
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)  # fmt: skip


@st.composite
def _mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bit flips, a truncation, inserted or deleted bytes."""
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            return draw(st.binary(max_size=64))
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
        if how == "flip":
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif how == "truncate":
            data = data[:at]
        elif how == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
        elif how == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 512)) :]
        else:  # a copy of another part of the data: plausible headers in implausible places
            start = draw(st.integers(0, len(data) - 1))
            data = data[:at] + data[start : start + draw(st.integers(1, 1024))] + data[at:]
    return data


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


@st.composite
def _mutated_catalog(draw: st.DrawFn, catalog: dict[str, Any]) -> Any:
    """The catalog with a few members replaced by any JSON value, deleted, or added."""
    result: Any = copy.deepcopy(catalog)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(result))))
        if not path:
            result = draw(JSON_VALUES)
            continue
        parent = result
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["replace", "delete", "add"]))
        if how == "replace":
            parent[path[-1]] = draw(JSON_VALUES | st.sampled_from([-1, 2**63, "", "sha256:" + "0" * 64, [], {}]))
        elif how == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))  # a duplicate record
        else:
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    return result


# -- properties -------------------------------------------------------------------------------------------------
@FUZZ
@given(value=JSON_VALUES, depth=st.integers(1, 12), indent=st.none() | st.integers(0, 2))
def test_json_within_the_bounds_parses_as_json_loads_does(value: Any, depth: int, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    limits = JsonLimits(max_depth=depth, max_elements=100, max_elements_per_kib=100)
    try:
        parsed = jsontext.loads(text.encode(), limits)
    except ValueError as exc:
        assert "levels deep" in str(exc)
        return
    assert parsed == json.loads(text)


@FUZZ
@given(data=st.binary(max_size=512) | st.text(alphabet='[]{},:"\\ 0a', max_size=512).map(str.encode))
def test_any_bytes_are_json_or_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        jsontext.loads(data, JsonLimits(max_depth=4, max_elements=40, max_elements_per_kib=40))


@FUZZ
@given(data=st.data())
def test_a_mutated_catalog_parses_or_is_a_catalog_error(sample: dict[str, Any], data: st.DataObject) -> None:
    mutated = data.draw(_mutated_catalog(sample["catalog"]))
    text = json.dumps(mutated).encode()
    for attempt in (text, data.draw(_mutated_bytes(text))):
        with contextlib.suppress(IntegrityError):
            parse_catalog(attempt, LIMITS)


@FUZZ
@given(data=st.data())
def test_a_mutated_signature_file_verifies_or_is_an_integrity_error(
    sample: dict[str, Any], data: st.DataObject
) -> None:
    document = json.loads(sample["signature"])
    key = data.draw(st.sampled_from([*document, "extra"]))
    document[key] = data.draw(JSON_VALUES | st.just(base64.b64encode(b"\0" * 64).decode()))
    for attempt in (json.dumps(document).encode(), data.draw(_mutated_bytes(sample["signature"]))):
        with contextlib.suppress(IntegrityError):
            verify_catalog([sample["key"]], sample["catalog_bytes"], attempt)


def _read_everything(path: Path, sample: dict[str, Any]) -> None:
    """What verify and inspect do: each either succeeds or raises a DtbundleError."""
    with contextlib.suppress(DtbundleError):
        verify_bundle(path, [sample["key"]])
    try:
        with open_bundle(path, None) as bundle:  # inspect: the catalog, unverified; then every entry
            for _entry, stream in bundle.files():
                for _chunk in stream:
                    pass
    except DtbundleError:
        pass


@FUZZ
@given(data=st.data())
def test_a_mutated_bundle_reads_or_is_a_dtbundle_error(sample: dict[str, Any], data: st.DataObject) -> None:
    compressed = zstandard.ZstdCompressor().compress(sample["tar"])
    layer = data.draw(st.sampled_from(["tar", "zstd"]))
    mutated = (
        zstandard.ZstdCompressor().compress(data.draw(_mutated_bytes(sample["tar"])))
        if layer == "tar"
        else data.draw(_mutated_bytes(compressed))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutated.tar.zst"
        path.write_bytes(mutated)
        _read_everything(path, sample)


TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_SPARSE, b"g", b"7", b"Z"]  # fmt: skip


@FUZZ
@given(data=st.data())
def test_a_bundle_with_a_foreign_tar_member_reads_or_is_a_dtbundle_error(
    sample: dict[str, Any], data: st.DataObject
) -> None:
    entries = list(sample["entries"])
    extra = tarfile.TarInfo(data.draw(st.sampled_from([n for n, _ in entries]) | st.text(min_size=1, max_size=120)))
    extra.type = data.draw(st.sampled_from(TYPES))
    extra.size = data.draw(st.integers(0, 2048)) if extra.type in (tarfile.REGTYPE, b"7", b"Z") else 0
    extra.linkname = data.draw(st.text(max_size=20))
    extra.pax_headers = data.draw(st.dictionaries(st.sampled_from(["path", "size", "mtime", "x"]), st.text(max_size=8)))
    try:
        tar = _tar(entries, extra, at=data.draw(st.integers(0, len(entries))))
    except (ValueError, UnicodeError, tarfile.TarError):
        return  # tarfile cannot even write it
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "foreign.tar.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(tar))
        _read_everything(path, sample)


# -- defects found while fuzzing the tar layer, kept as fixed examples ------------------------------------
def _pax_then_file(record: bytes, size_field: bytes | None = None) -> bytes:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, len(record)
    member = bytearray(tarfile.TarInfo("dtbundle.json").tobuf(format=tarfile.USTAR_FORMAT))
    if size_field is not None:  # a size field other tar readers refuse, with a valid checksum
        member[124:136] = size_field.ljust(12, b"\0")
        member[148:156] = b" " * 8
        member[148:156] = b"%06o\0 " % sum(member)
    padding = bytes(-len(record) % 512)
    return pax.tobuf(format=tarfile.USTAR_FORMAT) + record + padding + bytes(member) + bytes(1024)


@pytest.mark.parametrize(
    "tar",
    [
        _pax_then_file(b"11 path=\xff\xfe\n"),  # was a UnicodeDecodeError: an internal error
        _pax_then_file("12 size=\uff11\n".encode()),  # a full-width "1": was read as size 1
        _pax_then_file(b"+11 size=1\n"),  # a signed record length
        _pax_then_file(b"", size_field=b"-1"),  # a negative size, which int(text, 8) accepted
        _pax_then_file(b"", size_field=b"0o17"),
    ],
    ids=["pax-not-utf8", "pax-size-fullwidth-digit", "pax-signed-length", "negative-size", "0o-size"],
)
def test_a_tar_header_other_readers_refuse_is_an_integrity_error(tar: bytes, tmp_path: Path) -> None:
    path = tmp_path / "odd.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(tar))
    with pytest.raises(IntegrityError, match="bundle tar"):
        open_bundle(path, None)
