"""The OCI image layout inside a bundle: ``oci-layout``, ``index.json``, ``blobs/``.

``index.json`` lists every root manifest of the bundle: each exported image
(named by ``org.opencontainers.image.ref.name`` so that ``skopeo inspect
oci:DIR:NAME`` finds it), each tagged signature or referrers index (named by its
tag reference), and each untagged OCI 1.1 referrer. Docker media types are kept
as they are: the layout may hold them, and converting would change digests.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle import jsontext
from dtbundle.bundle.format import CatalogArtifact, CatalogImage
from dtbundle.errors import CatalogError, LocalIOError, UsageError
from dtbundle.oci import OCI_INDEX, Descriptor
from dtbundle.oci.kinds import ArtifactKind

OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
KIND_ANNOTATION = "dev.dtbundle.kind"
SUBJECT_ANNOTATION = "dev.dtbundle.subject"


@dataclass(frozen=True)
class LayoutRoot:
    descriptor: Descriptor
    ref_name: str | None
    kind: ArtifactKind
    subject: str | None = None


def index_json(roots: Iterable[LayoutRoot]) -> bytes:
    manifests = []
    for root in roots:
        entry = root.descriptor.to_json()
        annotations = dict(entry.get("annotations") or {})
        if root.ref_name:
            annotations[REF_NAME] = root.ref_name
        annotations[KIND_ANNOTATION] = root.kind
        if root.subject:
            annotations[SUBJECT_ANNOTATION] = root.subject
        entry["annotations"] = annotations
        manifests.append(entry)
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return (json.dumps(document, indent=1) + "\n").encode()


def catalog_index(images: Iterable[CatalogImage], artifacts: Iterable[CatalogArtifact]) -> bytes:
    """The ``index.json`` of a bundle, derived from its (validated) catalog records.

    Export writes exactly these bytes; import merges these entries into a target layout
    rather than the bundle's own ``index.json``, whose entries are only compared
    (:func:`check_bundle_index`): every name and digest that reaches a layout was validated.
    """
    roots = [LayoutRoot(Descriptor(i.media_type, i.digest, i.size), i.ref_name, ArtifactKind.IMAGE) for i in images]
    roots += [
        LayoutRoot(
            Descriptor(a.media_type, a.digest, a.size, artifact_type=a.artifact_type), a.ref_name, a.kind, a.subject
        )
        for a in artifacts
    ]
    return index_json(roots)


def check_bundle_index(data: bytes, expected: bytes) -> None:
    """Refuse a bundle whose ``index.json`` lists other roots than its catalog (pure)."""

    def roots(document: bytes) -> set[tuple[str, str, str, str | None]]:
        entries = jsontext.loads(document)["manifests"]
        return {(str(e["mediaType"]), str(e["digest"]), str(e["size"]), _ref_name(e)) for e in entries}

    try:
        same = roots(data) == roots(expected)
    except (ValueError, TypeError, KeyError, AttributeError):
        same = False
    if not same:
        raise CatalogError("the bundle's index.json does not list the roots its catalog names: the bundle is corrupt")


@dataclass
class IndexMerge:
    """What merging a bundle's roots into a layout's ``index.json`` does."""

    added: int = 0
    unchanged: int = 0
    overwritten: int = 0


@dataclass
class LayoutWrite:
    """What :meth:`LayoutWriter.commit` did."""

    blobs_written: int = 0
    blobs_exist: int = 0
    index: IndexMerge = field(default_factory=IndexMerge)


def merge_index(existing: bytes | None, bundle_index: bytes, overwrite: bool, where: Path) -> tuple[bytes, IndexMerge]:
    """The target layout's ``index.json`` with the bundle's roots merged in (pure).

    A ref name that exists with another digest is refused unless ``overwrite``.
    """
    empty: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    try:
        document: dict[str, Any] = jsontext.loads(existing) if existing else empty
        entries: list[dict[str, Any]] = document.setdefault("manifests", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("manifests is not a list of objects")
    except (ValueError, AttributeError):
        raise UsageError(f"{where}/index.json is not an OCI image index; choose another --to-oci directory") from None
    by_name = {_ref_name(e): n for n, e in enumerate(entries) if _ref_name(e)}
    known = {(e.get("digest"), _ref_name(e)) for e in entries}
    counts = IndexMerge()
    for entry in jsontext.loads(bundle_index)["manifests"]:
        name = _ref_name(entry)
        if (entry["digest"], name) in known:
            counts.unchanged += 1
        elif name is not None and name in by_name:
            if not overwrite:
                raise UsageError(f"{where} already has {name} with another digest; pass --overwrite")
            entries[by_name[name]] = entry
            counts.overwritten += 1
        else:
            entries.append(entry)
            counts.added += 1
    return (json.dumps(document, indent=1) + "\n").encode(), counts


def ref_names(index: bytes | None) -> dict[str, str]:
    """Ref name -> digest of an ``index.json`` (unreadable entries are left out)."""
    try:
        entries = jsontext.loads(index).get("manifests", []) if index else []
    except (ValueError, AttributeError):
        return {}
    return {name: str(e.get("digest")) for e in entries if isinstance(e, dict) and (name := _ref_name(e)) is not None}


def check_layout_dir(directory: Path) -> None:
    """Refuse a directory that holds an OCI layout of another version (reads only)."""
    layout = directory / "oci-layout"
    try:
        version = jsontext.loads(layout.read_bytes()).get("imageLayoutVersion") if layout.exists() else "1.0.0"
    except (OSError, ValueError, AttributeError):
        version = None
    if version != "1.0.0":
        raise UsageError(f"{directory} holds an OCI layout of an unknown version")


def read_index(directory: Path) -> bytes | None:
    path = directory / "index.json"
    try:
        return path.read_bytes() if path.exists() else None
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}") from None


class LayoutWriter:
    """Writes verified content into an OCI image layout directory (``import --to-oci``).

    Nothing is written before the first :meth:`add`. Blobs go to temporary names while
    the bundle streams and are renamed into ``blobs/sha256/`` only by :meth:`commit`,
    after the whole bundle verified; then ``index.json`` is merged with what the
    directory already lists (:func:`merge_index`) and replaced atomically.
    """

    def __init__(self, directory: Path, overwrite: bool) -> None:
        check_layout_dir(directory)
        self.directory, self.overwrite = directory, overwrite
        self.blobs = directory / "blobs" / "sha256"
        # Directories this import would create: an aborted one removes them again (when empty).
        self.created = [d for d in (directory, directory / "blobs", self.blobs) if not d.exists()]
        self.pending: list[tuple[Path, Path]] = []
        self.result = LayoutWrite()

    def add(self, digest: str, chunks: Iterator[bytes]) -> None:
        final = self.blobs / digest.split(":", 1)[1]
        if final.exists():
            for _ in chunks:
                pass
            self.result.blobs_exist += 1
            return
        tmp = final.with_name(f".{final.name}.partial")
        self.pending.append((tmp, final))  # known before the first byte: abort() removes it whatever happens
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                for chunk in chunks:  # the bundle reader raises here when the blob's digest is wrong
                    handle.write(chunk)
        except OSError as exc:
            raise LocalIOError(f"cannot write {tmp}: {exc.strerror or exc}") from None

    def holds(self, digest: str) -> bool:
        """Whether the directory has the blob, or will have it at :meth:`commit` (written by this import)."""
        final = self.blobs / digest.split(":", 1)[1]
        return final.is_file() or any(f == final for _, f in self.pending)

    def abort(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.pending.clear()
        for directory in reversed(self.created):
            with contextlib.suppress(OSError):  # not empty (another writer), or already gone
                directory.rmdir()

    def commit(self, bundle_index: bytes) -> LayoutWrite:
        try:
            index, self.result.index = merge_index(
                read_index(self.directory), bundle_index, self.overwrite, self.directory
            )
        except BaseException:
            self.abort()
            raise
        try:
            for tmp, final in self.pending:
                os.replace(tmp, final)
                self.result.blobs_written += 1
            self.pending.clear()
            layout = self.directory / "oci-layout"
            if not layout.exists():
                layout.write_bytes(OCI_LAYOUT_BYTES)
            tmp_index = self.directory / ".index.json.partial"
            tmp_index.write_bytes(index)
            os.replace(tmp_index, self.directory / "index.json")
        except OSError as exc:
            raise LocalIOError(f"cannot write the OCI layout {self.directory}: {exc.strerror or exc}") from None
        return self.result


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None
