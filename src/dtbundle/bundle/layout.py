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
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtbundle.errors import LocalIOError, UsageError
from dtbundle.oci import OCI_INDEX, Descriptor

OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
KIND_ANNOTATION = "dev.dtbundle.kind"
SUBJECT_ANNOTATION = "dev.dtbundle.subject"


@dataclass(frozen=True)
class LayoutRoot:
    descriptor: Descriptor
    ref_name: str | None
    kind: str  # "image" or an artifact kind
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


class LayoutWriter:
    """Writes verified content into an OCI image layout directory (``import --to-oci``).

    Blobs go to temporary names while the bundle streams and are renamed into
    ``blobs/sha256/`` only by :meth:`commit`, after the whole bundle verified; then
    ``index.json`` is merged with what the directory already lists and replaced
    atomically. A ref name that exists with another digest is refused unless
    ``overwrite``.
    """

    def __init__(self, directory: Path, overwrite: bool) -> None:
        self.directory, self.overwrite = directory, overwrite
        self.blobs = directory / "blobs" / "sha256"
        self.pending: list[tuple[Path, Path]] = []
        self.counts: Counter[str] = Counter()
        layout = directory / "oci-layout"
        if layout.exists() and json.loads(layout.read_bytes()).get("imageLayoutVersion") != "1.0.0":
            raise UsageError(f"{directory} holds an OCI layout of an unknown version")
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalIOError(f"cannot create {self.blobs}: {exc.strerror or exc}") from None

    def add(self, digest: str, chunks: Iterator[bytes]) -> None:
        final = self.blobs / digest.split(":", 1)[1]
        if final.exists():
            for _ in chunks:
                pass
            self.counts["blobs exist"] += 1
            return
        tmp = final.with_name(f".{final.name}.partial")
        try:
            with tmp.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
        except OSError as exc:
            raise LocalIOError(f"cannot write {tmp}: {exc.strerror or exc}") from None
        self.pending.append((tmp, final))

    def abort(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.pending.clear()

    def commit(self, bundle_index: bytes) -> Counter[str]:
        index_path = self.directory / "index.json"
        empty: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        document: dict[str, Any] = json.loads(index_path.read_bytes()) if index_path.exists() else empty
        entries: list[dict[str, Any]] = document.setdefault("manifests", [])
        by_name = {_ref_name(e): n for n, e in enumerate(entries) if _ref_name(e)}
        known = {(e.get("digest"), _ref_name(e)) for e in entries}
        for entry in json.loads(bundle_index)["manifests"]:
            name = _ref_name(entry)
            if (entry["digest"], name) in known:
                self.counts["index entries unchanged"] += 1
                continue
            if name is not None and name in by_name:
                if not self.overwrite:
                    self.abort()
                    raise UsageError(f"{self.directory} already has {name} with another digest; pass --overwrite")
                entries[by_name[name]] = entry
                self.counts["index entries overwritten"] += 1
            else:
                entries.append(entry)
                self.counts["index entries added"] += 1
        try:
            for tmp, final in self.pending:
                os.replace(tmp, final)
                self.counts["blobs written"] += 1
            self.pending.clear()
            layout = self.directory / "oci-layout"
            if not layout.exists():
                layout.write_bytes(OCI_LAYOUT_BYTES)
            tmp_index = self.directory / ".index.json.partial"
            tmp_index.write_text(json.dumps(document, indent=1) + "\n")
            os.replace(tmp_index, index_path)
        except OSError as exc:
            raise LocalIOError(f"cannot write the OCI layout {self.directory}: {exc.strerror or exc}") from None
        return self.counts


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None
