"""A corpus of hostile bundles, each imported into a real registry: every one ends with its exit code
and one clean line, writes no manifest and no tag at the target, and leaves no file behind.

Most are validly signed (a signature says who made a bundle, not that it is well-formed); the
archive-level ones need no signature to be refused. ``DTBUNDLE_CORPUS=full`` (``scripts/hostile.sh``)
also runs each through ``verify``, ``inspect`` and ``import --to-oci``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from dtbundle.bundle.format import CATALOG_NAME, INDEX_NAME, SIGNATURE_NAME, TARGET_REPOSITORY_ANNOTATION
from dtbundle.bundle.key import generate_keys, load_private_key, sign_catalog
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import member, read_entries, write_entries, write_members
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import Exported

Entries = list[tuple[str, bytes]]
Catalog = dict[str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Exported, Path], None]  # writes the hostile bundle at the path
    code: int = 3


def signed(mutate: Callable[[Catalog], object]) -> Callable[[Exported, Path], None]:
    """The session bundle with its catalog changed by ``mutate`` and signed again with its own key."""

    def build(exported: Exported, out: Path) -> None:
        entries = read_entries(exported.path)
        catalog = json.loads(dict(entries)[CATALOG_NAME])
        mutate(catalog)
        data = json.dumps(catalog).encode()
        replaced = {CATALOG_NAME: data, SIGNATURE_NAME: sign_catalog(load_private_key(exported.key), data)}
        write_entries(out, [(n, replaced.get(n, d)) for n, d in entries])

    return build


def archive(change: Callable[[Entries], Entries]) -> Callable[[Exported, Path], None]:
    def build(exported: Exported, out: Path) -> None:
        write_entries(out, change(read_entries(exported.path)))

    return build


def members(change: Callable[[Entries], list[tuple[tarfile.TarInfo, bytes]]], **zstd: Any) -> Callable[..., None]:
    def build(exported: Exported, out: Path) -> None:
        write_members(out, change(read_entries(exported.path)), zstandard.ZstdCompressor(**zstd) if zstd else None)

    return build


def raw(data: Callable[[bytes], bytes]) -> Callable[[Exported, Path], None]:
    def build(exported: Exported, out: Path) -> None:
        out.write_bytes(data(exported.path.read_bytes()))

    return build


def _file(catalog: Catalog, n: int = 3) -> dict[str, Any]:
    return dict(catalog["files"][n])


def _set_file(catalog: Catalog, n: int, **fields: Any) -> None:
    old = catalog["files"][n]
    catalog["totalSize"] += fields.get("size", old["size"]) - old["size"]
    old.update(fields)


def _retagged(image: dict[str, Any]) -> str:
    return f"{image['registry']}/{image['repository']}:other-tag"


def _blob(entries: Entries) -> int:
    return max(range(len(entries)), key=lambda n: len(entries[n][1]))  # the largest layer


def _keep_first(entries: Entries, *extra: tuple[tarfile.TarInfo, bytes]) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Catalog, signature, layout and index as they are, then ``extra`` in place of the rest."""
    return [member(n, d) for n, d in entries[:4]] + list(extra)


def _other_key_signature(exported: Exported, out: Path) -> None:
    keys = generate_keys(out.parent / f"other-{uuid.uuid4().hex[:6]}")
    entries = read_entries(exported.path)
    catalog = dict(entries)[CATALOG_NAME]
    forged = sign_catalog(load_private_key(keys.private_path), catalog)
    write_entries(out, [(n, forged if n == SIGNATURE_NAME else d) for n, d in entries])


DEEP = b"[" * 50_000 + b"]" * 50_000
HEX = "ab" * 32

CORPUS = [
    # -- names (signed) ------------------------------------------------------------------------------
    Case("private-repository-traversal", signed(lambda c: c["images"][0]["annotations"].update(
        {TARGET_REPOSITORY_ANNOTATION: "../escaped/victim"}))),
    Case("private-repository-absolute", signed(lambda c: c["images"][0]["annotations"].update(
        {TARGET_REPOSITORY_ANNOTATION: "/abs/x"}))),
    Case("repository-upper-case", signed(lambda c: c["images"][0].update(repository="Team/App"))),
    Case("repository-empty-component", signed(lambda c: c["images"][0].update(repository="a//b"))),
    Case("repository-dot-dot", signed(lambda c: c["images"][0].update(repository="a/../../b"))),
    Case("repository-query", signed(lambda c: c["images"][0].update(repository="a/b?x=1"))),
    Case("repository-newline", signed(lambda c: c["images"][0].update(repository="a/b\nc"))),
    Case("registry-userinfo", signed(lambda c: c["images"][0].update(registry="u:p@evil.example"))),
    Case("registry-with-path", signed(lambda c: c["images"][0].update(registry="evil.example/x"))),
    Case("tag-with-colon", signed(lambda c: c["images"][0].update(tag="a:b"))),
    Case("tag-too-long", signed(lambda c: c["images"][0].update(tag="v" * 129))),
    Case("tag-escape-sequence", signed(lambda c: c["images"][0].update(tag="1\x1b[2K"))),
    Case("ref-name-foreign", signed(lambda c: c["images"][0].update(refName="evil.example/x:1"))),
    Case("artifact-ref-name-traversal", signed(lambda c: c["artifacts"][0].update(refName="../../x:1"))),
    # -- catalog structure (signed) -------------------------------------------------------------------
    Case("file-path-traversal", signed(lambda c: _set_file(c, 3, path=f"blobs/sha256/../../{HEX}"))),
    Case("file-path-absolute", signed(lambda c: _set_file(c, 3, path="/etc/passwd"))),
    Case("file-name-not-its-hash", signed(lambda c: _set_file(c, 3, path=f"blobs/sha256/{HEX}"))),
    Case("file-size-negative", signed(lambda c: _set_file(c, 3, size=-1))),
    Case("file-size-larger", signed(lambda c: _set_file(c, 3, size=_file(c)["size"] + 1))),
    Case("file-size-huge", signed(lambda c: _set_file(c, 3, size=1 << 62))),
    Case("file-size-not-int", signed(lambda c: c["files"][3].update(size="12"))),
    Case("file-listed-twice", signed(lambda c: c["files"].append(_file(c)))),
    Case("total-size-lie", signed(lambda c: c.update(totalSize=c["totalSize"] - 1))),
    Case("format-version-unknown", signed(lambda c: c.update(formatVersion=99))),
    Case("image-digest-absent", signed(lambda c: c["images"][0].update(digest="sha256:" + HEX))),
    Case("image-media-type-html", signed(lambda c: c["images"][0].update(mediaType="text/html"))),
    Case("artifact-subject-absent", signed(lambda c: c["artifacts"][0].update(subject="sha256:" + HEX))),
    Case("artifact-kind-unknown", signed(lambda c: c["artifacts"][0].update(kind="surprise"))),
    Case("images-not-a-list", signed(lambda c: c.update(images={"a": 1}))),
    Case("index-json-claimed-huge", signed(lambda c: _set_file(c, 1, size=400 << 20))),
    Case("oci-layout-claimed-huge", signed(lambda c: _set_file(c, 0, size=1 << 30))),
    Case("created-not-a-time", signed(lambda c: c.update(created="yesterday"))),
    Case("ref-name-tag-differs", signed(lambda c: c["images"][0].update(refName=_retagged(c["images"][0])))),
    Case("first-files-reordered", signed(lambda c: c["files"].insert(0, c["files"].pop(1)))),
    # -- catalog and signature documents ---------------------------------------------------------------
    Case("catalog-not-json", archive(lambda e: [(CATALOG_NAME, b"\xff\xfe not json"), *e[1:]])),
    Case("catalog-nested-deep", archive(lambda e: [(CATALOG_NAME, DEEP), *e[1:]])),
    Case("signature-nested-deep", archive(lambda e: [*e[:1], (SIGNATURE_NAME, DEEP), *e[2:]])),
    Case("signature-not-json", archive(lambda e: [*e[:1], (SIGNATURE_NAME, b"{"), *e[2:]])),
    Case("signature-other-key", _other_key_signature),
    Case("signature-missing", archive(lambda e: e[:1] + e[2:])),
    Case("catalog-missing", archive(lambda e: e[1:])),
    # -- archive ------------------------------------------------------------------------------------------
    Case("blob-byte-flipped", archive(lambda e: [
        (n, d[:-1] + bytes([d[-1] ^ 1]) if i == _blob(e) else d) for i, (n, d) in enumerate(e)])),
    Case("index-json-changed", archive(lambda e: [(n, d + b" " if n == INDEX_NAME else d) for n, d in e])),
    Case("entry-missing", archive(lambda e: e[:-1])),
    Case("entry-extra", archive(lambda e: [*e, (f"blobs/sha256/{HEX}", b"extra")])),
    Case("entry-duplicated", archive(lambda e: [*e, e[-1]])),
    Case("entry-outside-layout", archive(lambda e: [*e[:5], ("../../etc/cron.d/x", b"* * * * * root id"), *e[5:]])),
    Case("entries-reordered", archive(lambda e: e[:4] + e[-1:] + e[4:-1])),
    Case("symlink-entry", members(lambda e: _keep_first(e, member(
        e[4][0], kind=tarfile.SYMTYPE, linkname="/etc/passwd")) + [member(n, d) for n, d in e[5:]])),
    Case("hardlink-entry", members(lambda e: _keep_first(e, member(
        e[4][0], kind=tarfile.LNKTYPE, linkname=CATALOG_NAME)) + [member(n, d) for n, d in e[5:]])),
    Case("device-entry", members(lambda e: _keep_first(e, member(
        e[4][0], kind=tarfile.CHRTYPE, devmajor=1, devminor=3)) + [member(n, d) for n, d in e[5:]])),
    Case("directory-entry", members(lambda e: _keep_first(e, member("blobs/", kind=tarfile.DIRTYPE))
                                    + [member(n, d) for n, d in e[4:]])),
    Case("pax-header-huge", members(lambda e: _keep_first(e, member(
        e[4][0], e[4][1], pax_headers={"comment": "x" * (1 << 20)})) + [member(n, d) for n, d in e[5:]])),
    Case("zstd-window-too-large", members(lambda e: [member(n, d) for n, d in e],
                                          compression_params=zstandard.ZstdCompressionParameters(window_log=30))),
    Case("truncated-half", raw(lambda d: d[: len(d) // 2])),
    Case("truncated-last-byte", raw(lambda d: d[:-1])),
    Case("trailing-garbage", raw(lambda d: d + b"garbage")),
    Case("second-zstd-frame-with-data", raw(lambda d: d + zstandard.ZstdCompressor().compress(b"tail" * 256))),
    Case("half-zstd-frame-after", raw(lambda d: d + zstandard.ZstdCompressor().compress(b"tail" * 256)[:9])),
    Case("not-zstd", raw(lambda d: b"PK\x03\x04" + d[4:])),
    Case("empty-file", raw(lambda d: b"")),
]  # fmt: skip

# Every case is imported into a registry; the full matrix (scripts/hostile.sh) also runs it
# through verify, inspect and import --to-oci, and repeats each DTBUNDLE_CORPUS_ROUNDS times.
COMMANDS = ["import"] + (["verify", "inspect", "import-oci"] if os.environ.get("DTBUNDLE_CORPUS") == "full" else [])
ROUNDS = range(int(os.environ.get("DTBUNDLE_CORPUS_ROUNDS", "1")))


def _manifests_below(server: RegistryServer) -> list[str]:
    """Repositories that hold a manifest or tag (blobs alone are allowed)."""
    root = server.storage / "docker" / "registry" / "v2" / "repositories"
    return [str(p.parent.relative_to(root)) for p in root.rglob("_manifests")] if root.exists() else []


def _built(case: Case, exported: Exported, tmp_path: Path) -> Path:
    bundle = tmp_path / "in" / f"{case.name}.tar.zst"
    bundle.parent.mkdir()
    case.build(exported, bundle)
    assert hashlib.sha256(bundle.read_bytes()).digest() != hashlib.sha256(exported.path.read_bytes()).digest()
    return bundle


def _nothing_left(tmp_path: Path, bundle: Path) -> None:
    left = [p for p in tmp_path.rglob("*") if p.is_file() and p != bundle and "other-" not in str(p)]
    assert left == [], f"left behind: {left}"


@pytest.mark.parametrize("round_", ROUNDS, ids=[f"round{n}" for n in ROUNDS])
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_a_hostile_bundle_lands_nothing(
    plain_registry: RegistryServer, exported: Exported, tmp_path: Path, case: Case, command: str, round_: int
) -> None:
    bundle = _built(case, exported, tmp_path)
    key = ("--public-key", str(exported.pub))
    if command == "import":
        tenant = f"hostile-{uuid.uuid4().hex[:8]}"
        target = ("--registry", f"{plain_registry.address}/{tenant}", "--plain-http")
        proc = run_in_process("import", str(bundle), *target, *key)
        assert "internal error" not in assert_clean_error(proc, case.code)
        assert not [r for r in _manifests_below(plain_registry) if r.startswith(tenant) or "escaped" in r]
    elif command == "import-oci":
        layout = tmp_path / "layout"
        assert_clean_error(run_in_process("import", str(bundle), "--to-oci", str(layout), *key), case.code)
        assert not layout.exists(), "the layout was written"
    elif command == "verify":
        assert_clean_error(run_in_process("verify", str(bundle), *key), case.code)
    else:  # inspect reads the catalog only: it may succeed, but never crashes or prints raw controls
        proc = run_in_process("inspect", str(bundle))
        assert proc.returncode in (0, 3) and "Traceback" not in proc.stderr and "\x1b" not in proc.stdout
    _nothing_left(tmp_path, bundle)


def test_the_readme_counts_the_corpus() -> None:
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    assert f"A corpus of {len(CORPUS)} hostile bundles" in readme
