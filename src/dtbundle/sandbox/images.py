"""Synthetic sample images: multi-arch, shared base layers, OCI and Docker media types,
and cosign-format signatures at ``sha256-<hex>.sig``.

The images are built here, byte by byte, so tests know every digest, and are
pushed with dtbundle's own client (skopeo then checks them independently).
Layers are real gzip-compressed tars, so any tool can unpack them.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle import oci
from dtbundle.oci import Descriptor, Platform, sha256_digest
from dtbundle.oci.reference import Reference
from dtbundle.registry import RegistryClient


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, indent=2).encode()


def make_layer(seed: str, size: int) -> bytes:
    """A gzip-compressed tar holding one file of ``size`` pseudo-random bytes."""
    payload = random.Random(seed).randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/{seed.replace('/', '_')}.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, sha256_digest(self.data), len(self.data))


@dataclass
class BuiltManifest:
    media_type: str
    data: bytes
    blobs: list[Blob] = field(default_factory=list)
    children: list[BuiltManifest] = field(default_factory=list)
    platform: Platform | None = None

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data), platform=self.platform)


def build_image(platform: Platform, layers: Sequence[bytes], *, docker: bool = False, label: str = "") -> BuiltManifest:
    layer_type = oci.DOCKER_LAYER_GZIP if docker else oci.OCI_LAYER_GZIP
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "config": {"Labels": {"org.example.sample": label}},
        "rootfs": {
            "type": "layers",
            "diff_ids": [sha256_digest(gzip.decompress(layer)) for layer in layers],
        },
        "history": [{"created_by": f"dtbundle sandbox layer {i}"} for i in range(len(layers))],
    }
    config_blob = Blob(oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG, _canonical(config))
    layer_blobs = [Blob(layer_type, layer) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST,
        "config": config_blob.descriptor.to_json(),
        "layers": [b.descriptor.to_json() for b in layer_blobs],
    }
    return BuiltManifest(
        str(manifest["mediaType"]),
        _canonical(manifest),
        [config_blob, *layer_blobs],
        platform=platform,
    )


def build_index(children: Sequence[BuiltManifest], *, docker: bool = False) -> BuiltManifest:
    media_type = oci.DOCKER_MANIFEST_LIST if docker else oci.OCI_INDEX
    index = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [c.descriptor().to_json() for c in children],
    }
    return BuiltManifest(media_type, _canonical(index), children=list(children))


def cosign_signature(image_name: str, digest: str, key: ec.EllipticCurvePrivateKey) -> BuiltManifest:
    """A cosign 'simple signing' signature manifest for ``digest``, signed with ``key``."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": image_name},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = Blob(oci.COSIGN_SIMPLESIGNING, payload)
    config = Blob(
        oci.OCI_CONFIG,
        _canonical(
            {
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
            }
        ),
    )
    layer_desc = layer.descriptor.to_json()
    layer_desc["annotations"] = {oci.COSIGN_SIGNATURE_ANNOTATION: signature}
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": config.descriptor.to_json(),
        "layers": [layer_desc],
    }
    return BuiltManifest(oci.OCI_MANIFEST, _canonical(manifest), [config, layer])


def push(client: RegistryClient, ref: Reference, built: BuiltManifest) -> str:
    """Push ``built`` (children first) and tag it as ``ref``; return its digest."""
    for child in built.children:
        push(client, ref.with_tag(None), child)
    for blob in built.blobs:
        client.upload_blob(ref, blob.descriptor, lambda b=blob: io.BytesIO(b.data))  # type: ignore[misc]
    target = ref if ref.tag else ref.with_digest(built.digest)
    return client.put_manifest(target, built.data, built.media_type).digest


@dataclass
class SampleImage:
    ref: Reference  # tagged
    manifest: BuiltManifest
    signed: bool

    @property
    def digest(self) -> str:
        return self.manifest.digest


def sample_catalog(scale: int = 1) -> dict[str, BuiltManifest]:
    """The sample set: repository:tag -> image. ``scale`` multiplies layer sizes."""
    k = 1024 * scale
    base = make_layer("base-os", 96 * k)  # shared by every image below
    amd, arm64, armv7, s390x = (
        Platform("linux", "amd64"),
        Platform("linux", "arm64"),
        Platform("linux", "arm", "v7"),
        Platform("linux", "s390x"),
    )

    def img(name: str, plat: Platform, size: int, docker: bool = False) -> BuiltManifest:
        return build_image(plat, [base, make_layer(f"{name}-{plat}", size)], docker=docker, label=name)

    return {
        # OCI index, three platforms
        "samples/operator:1.0.0": build_index([img("operator", p, 48 * k) for p in (amd, arm64, armv7)]),
        # Docker manifest list, four platforms
        "samples/agent:2.1.0": build_index(
            [img("agent", p, 64 * k, docker=True) for p in (amd, arm64, armv7, s390x)], docker=True
        ),
        # OCI index, two platforms
        "samples/collector:0.9.1": build_index([img("collector", p, 32 * k) for p in (amd, arm64)]),
        # Single-platform images of both kinds
        "samples/tool:3.0": img("tool", amd, 24 * k),
        "samples/legacy-tool:1.2": img("legacy", amd, 24 * k, docker=True),
    }


def seed(
    client: RegistryClient,
    registry: str,
    key: ec.EllipticCurvePrivateKey,
    unsigned: Sequence[str] = ("samples/tool:3.0",),
    scale: int = 1,
) -> list[SampleImage]:
    """Push the sample set to ``registry``; sign each image (and each platform) with ``key``."""
    images = []
    for name, built in sample_catalog(scale).items():
        ref = Reference(registry, *name.split(":", 1))
        push(client, ref, built)
        signed = name not in unsigned
        if signed:
            for target in [built, *built.children]:
                sig = cosign_signature(f"{registry}/{ref.repository}", target.digest, key)
                push(client, ref.with_tag(oci.referrers_tag(target.digest) + ".sig"), sig)
        images.append(SampleImage(ref, built, signed))
    return images
