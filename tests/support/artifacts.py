"""OCI artifacts and keys that tests build themselves: the smallest image manifest, referrer
manifests with a subject, and cosign public keys written as PEM files."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle import oci
from dtbundle.oci import Descriptor
from dtbundle.sandbox import images

# An image manifest with an empty config and no layers: what a fake registry serves.
EMPTY_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": oci.sha256_digest(b"{}"), "size": 2},
        "layers": [],
    }
).encode()


def referrer_artifact(
    subject: images.BuiltManifest | Descriptor, artifact_type: str, payload: bytes
) -> images.BuiltManifest:
    """An OCI 1.1 artifact manifest (empty config, one layer holding ``payload``) that refers to ``subject``."""
    desc = subject.descriptor() if isinstance(subject, images.BuiltManifest) else subject
    empty = images.Blob(oci.OCI_EMPTY, b"{}")
    layer = images.Blob(artifact_type, payload)
    data = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty.descriptor.to_json(),
            "layers": [layer.descriptor.to_json()],
            "subject": desc.to_json(),
        }
    ).encode()
    return images.BuiltManifest(oci.OCI_MANIFEST, data, [empty, layer])


def write_pub(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    """Write ``key``'s public half as a PEM SubjectPublicKeyInfo (a cosign.pub) to ``path``."""
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path
