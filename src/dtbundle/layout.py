"""The OCI image layout inside a bundle: ``oci-layout``, ``index.json``, ``blobs/``.

``index.json`` lists every root manifest of the bundle: each exported image
(named by ``org.opencontainers.image.ref.name`` so that ``skopeo inspect
oci:DIR:NAME`` finds it), each tagged signature or referrers index (named by its
tag reference), and each untagged OCI 1.1 referrer. Docker media types are kept
as they are: the layout may hold them, and converting would change digests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

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


def load_index_json(data: bytes) -> list[Descriptor]:
    """The descriptors of an ``index.json`` (used to read a layout back)."""
    document = json.loads(data)
    return [Descriptor.from_json(m) for m in document.get("manifests", [])]
