"""The benchmark sets and how they are pushed into a source registry.

Every set is multi-arch images sharing one base layer, each platform with its own random
(incompressible, like real gzip layers) layers, every index and platform manifest signed with
a cosign key signature at its ``sha256-<hex>.sig`` tag. Pushed with the floor's raw client,
so seeding does not depend on the dtbundle code being measured.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from benchlib.common import MiB, write_random
from benchlib.floor import OCI_INDEX, OCI_MANIFEST, Pusher, client_for, digest_of
from dtbundle.sandbox import images

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PLATFORMS = (("amd64", None), ("arm64", None), ("arm", "v7"), ("s390x", None), ("ppc64le", None))


@dataclass(frozen=True)
class SetSpec:
    key: str
    title: str
    platforms: tuple[int, ...]  # platforms of each image
    base_bytes: int  # one base layer, shared by every platform image
    layer_bytes: tuple[int, ...]  # each platform image's own layers
    latency: bool = False  # behind the delaying proxy
    targets: tuple[float, float] | None = None  # dtbundle/skopeo: export, import

    @property
    def content_bytes(self) -> int:
        return self.base_bytes + sum(self.platforms) * sum(self.layer_bytes)


def _large(key: str, title: str, total: int, targets: tuple[float, float]) -> SetSpec:
    platforms = (3, 4, 2, 3, 2)  # 5 images, 14 platform images of 2 layers each
    base = 64 * MiB
    layer = (total - base) // (2 * sum(platforms))
    return SetSpec(key, title, platforms, base, (layer, layer), targets=targets)


def make_set(key: str, small: bool = False) -> SetSpec:
    """``1.2gb``, ``5gb`` or ``latency``; ``small``: a tiny version of it (a few images, KiB layers)."""
    if key == "1.2gb":
        spec = _large(key, "1.2 GB, 5 images, 2-4 platforms", 1_200_000_000, (0.65, 0.6))
    elif key == "5gb":
        spec = _large(key, "5 GB, 5 images, 2-4 platforms", 5_000_000_000, (0.5, 0.5))
    elif key == "latency":
        spec = SetSpec(
            key, "12 small multi-arch images, {latency} ms per request", (2, 3, 4) * 4, MiB,
            (512 * 1024, 128 * 1024), latency=True, targets=(0.3, 0.2),
        )  # fmt: skip
    else:
        raise SystemExit(f"unknown set {key!r}: 1.2gb, 5gb or latency")
    if small:
        title = f"{spec.key} set, --small" + (", {latency} ms per request" if spec.latency else "")
        return SetSpec(spec.key, title, (2, 3), 16 * 1024, (8 * 1024, 4 * 1024), spec.latency, spec.targets)
    return spec


def _manifest(config: Mapping[str, object], layers: list[tuple[str, int]]) -> tuple[bytes, bytes]:
    config_data = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config_data), "size": len(config_data)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
    }
    return json.dumps(manifest).encode(), config_data


def seed_set(spec: SetSpec, registry: str, work: Path) -> list[tuple[str, str, str]]:
    """Push ``spec``'s images into ``registry`` (host:port); return their (repository, tag, digest)."""
    key = ec.generate_private_key(ec.SECP256R1())
    work.mkdir(parents=True, exist_ok=True)
    refs = []
    with client_for(f"http://{registry}", 4) as client:
        pusher = Pusher(client)
        base = _layer(pusher, work, "bench/base", spec.base_bytes)
        for n, count in enumerate(spec.platforms):
            repo = f"bench/{spec.key.replace('.', '')}-app{n:02d}"
            pusher.mount(repo, base[0], "bench/base")
            children = []
            for arch, variant in PLATFORMS[:count]:
                layers = [base] + [_layer(pusher, work, repo, size) for size in spec.layer_bytes]
                config = {
                    "architecture": arch,
                    "os": "linux",
                    **({"variant": variant} if variant else {}),
                    "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]},
                }
                manifest, config_data = _manifest(config, layers)
                pusher.upload(repo, digest_of(config_data), len(config_data), config_data)
                pusher.put_manifest(repo, digest_of(manifest), manifest, OCI_MANIFEST)
                platform = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
                children.append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest_of(manifest),
                        "size": len(manifest),
                        "platform": platform,
                    }
                )
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
            pusher.put_manifest(repo, "1.0", index, OCI_INDEX)
            for subject in [digest_of(index), *(c["digest"] for c in children)]:
                _sign(client, registry, repo, str(subject), key)
            refs.append((repo, "1.0", digest_of(index)))
    return refs


def _layer(pusher: Pusher, work: Path, repo: str, size: int) -> tuple[str, int]:
    if size <= 16 * MiB:
        data = os.urandom(size)
        digest = digest_of(data)
        pusher.upload(repo, digest, size, data)
        return digest, size
    path = work / "layer.bin"
    digest = write_random(path, size)
    with path.open("rb") as handle:
        pusher.upload(repo, digest, size, iter(_reader(handle), b""))
    path.unlink()
    return digest, size


def _reader(handle: io.BufferedReader) -> Callable[[], bytes]:
    return lambda: handle.read(MiB)


def _sign(client: httpx.Client, registry: str, repo: str, subject: str, key: ec.EllipticCurvePrivateKey) -> None:
    """A cosign key signature of ``subject`` at its ``sha256-<hex>.sig`` tag (as cosign stores it)."""
    built = images.cosign_signature(f"{registry}/{repo}", subject, key)
    pusher = Pusher(client)
    for blob in built.blobs:
        pusher.upload(repo, digest_of(blob.data), len(blob.data), blob.data)
    pusher.put_manifest(repo, "sha256-" + subject.removeprefix("sha256:") + ".sig", built.data, built.media_type)
