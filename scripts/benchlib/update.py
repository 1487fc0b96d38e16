"""Issue 14's measurements: a synthetic update (delta bundle against an inventory), a volume set
imported one volume at a time, and a pipe (``export -o - | import -``) against a file and an import.

The update: ``--images`` multi-arch images (2 platforms each) on one shared base layer; each
platform image has three layers of its own, and version 1.1 changes only the top one (and the
config), as a OneAgent or ActiveGate update mostly does. Layers are random bytes with a gzip
media type (incompressible, like real layers). Registries are Debian's docker-registry on
127.0.0.1; every measured step runs in its own process (``benchlib.common.measured``).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from benchlib.common import MiB, child_env, measured, measured_pipeline
from benchlib.floor import OCI_INDEX, OCI_MANIFEST, Pusher, client_for, digest_of
from benchlib.seed import OCI_CONFIG, OCI_LAYER, _sign
from dtbundle.sandbox.registry_server import RegistryServer, start_registry

PLATFORMS = ("amd64", "arm64")


@dataclass
class Update:
    """What was pushed: per version, the image references; the blobs (digest -> size) of each version."""

    refs: dict[str, list[str]] = field(default_factory=dict)
    blobs: dict[str, dict[str, int]] = field(default_factory=dict)


def seed_update(registry: str, images: int, base: int, layers: tuple[int, ...]) -> Update:
    """Versions 1.0 and 1.1 of ``images`` images; 1.1 changes each platform's top layer and config."""
    key = ec.generate_private_key(ec.SECP256R1())
    update = Update()
    rng = random.Random(14)
    with client_for(f"http://{registry}", 4) as client:
        pusher = Pusher(client)
        base_data = rng.randbytes(base)
        base_digest = digest_of(base_data)
        pusher.upload("bench/base", base_digest, base, base_data)
        lower = {(n, arch): [rng.randbytes(size) for size in layers[:-1]] for n in range(images) for arch in PLATFORMS}
        for version in ("1.0", "1.1"):
            update.refs[version], blobs = [], {base_digest: base}
            for n in range(images):
                repo = f"bench/update-app{n}"
                pusher.mount(repo, base_digest, "bench/base")
                children = []
                for arch in PLATFORMS:
                    own = [*lower[(n, arch)], os.urandom(layers[-1])]  # the top layer changes every version
                    described = [(base_digest, base)]
                    for data in own:
                        pusher.upload(repo, digest_of(data), len(data), data)
                        described.append((digest_of(data), len(data)))
                    config = json.dumps(
                        {
                            "architecture": arch,
                            "os": "linux",
                            "version": version,
                            "rootfs": {"type": "layers", "diff_ids": [d for d, _ in described]},
                        }
                    ).encode()
                    pusher.upload(repo, digest_of(config), len(config), config)
                    manifest = json.dumps(
                        {
                            "schemaVersion": 2,
                            "mediaType": OCI_MANIFEST,
                            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in described],
                        }
                    ).encode()
                    pusher.put_manifest(repo, digest_of(manifest), manifest, OCI_MANIFEST)
                    blobs.update(described)
                    blobs[digest_of(config)] = len(config)
                    children.append(
                        {
                            "mediaType": OCI_MANIFEST,
                            "digest": digest_of(manifest),
                            "size": len(manifest),
                            "platform": {"os": "linux", "architecture": arch},
                        }
                    )
                index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
                pusher.put_manifest(repo, version, index, OCI_INDEX)
                _sign(client, registry, repo, digest_of(index), key)
                update.refs[version].append(f"{registry}/{repo}:{version}")
            update.blobs[version] = blobs
    return update


def _run(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr}")
    return dict(json.loads(proc.stdout)) if proc.stdout.strip().startswith("{") else {}


def run_update(work: Path, dtbundle: str, images: int, rounds: int, volume_mib: int) -> dict[str, Any]:
    """Every measurement of issue 14, as one JSON-ready report."""
    keys = work / "keys"
    _run([dtbundle, "keygen", "--output-dir", str(keys)])
    key, pub = ["--signing-key", str(keys / "dtbundle.key")], ["--public-key", str(keys / "dtbundle.pub")]
    source = start_registry(work / "source")
    try:
        update = seed_update(source.address, images, 64 * MiB, (24 * MiB, 16 * MiB, 8 * MiB))
        result: dict[str, Any] = {"images": images, "platforms": len(PLATFORMS)}
        result["delta"] = _delta(work, dtbundle, source, update, key, pub)
        result["volumes"] = _volumes(work, dtbundle, update, key, pub, volume_mib * MiB)
        result["pipe"] = _pipe(work, dtbundle, update, key, pub, rounds)
        return result
    finally:
        source.stop()


def _delta(
    work: Path, dtbundle: str, source: RegistryServer, update: Update, key: list[str], pub: list[str]
) -> dict[str, Any]:
    site = start_registry(work / "site")
    try:
        full_old, full_new, delta, inventory = (
            work / n for n in ("v10.tar.zst", "v11.tar.zst", "d11.tar.zst", "inv.json")
        )
        plain = ["--plain-http"]
        _run([dtbundle, "export", *plain, *key, "-o", str(full_old), "--json", *update.refs["1.0"]])
        _run([dtbundle, "import", *plain, *pub, "--registry", f"{site.address}/site", str(full_old), "--json"])
        seconds_inventory, _ = measured(
            [
                dtbundle,
                "inventory",
                *plain,
                "--registry",
                f"{site.address}/site",
                "--bundle",
                str(full_old),
                "-o",
                str(inventory),
                *key,
            ],
            child_env(),
            quiet=True,
        )
        seconds_full, _ = measured(
            [dtbundle, "export", *plain, *key, "-o", str(full_new), "-q", *update.refs["1.1"]], child_env(), quiet=True
        )
        made = _run(
            [
                dtbundle,
                "export",
                *plain,
                *key,
                "-o",
                str(delta),
                "--inventory",
                str(inventory),
                "--inventory-key",
                pub[1],
                "--json",
                *update.refs["1.1"],
            ]
        )
        imported = _run([dtbundle, "import", *plain, *pub, "--registry", f"{site.address}/site", str(delta), "--json"])
        changed = {d: s for d, s in update.blobs["1.1"].items() if d not in update.blobs["1.0"]}
        return {
            "full_bundle_bytes": full_new.stat().st_size,
            "delta_bundle_bytes": delta.stat().st_size,
            "changed_blob_bytes": sum(changed.values()),
            "changed_blobs": len(changed),
            "required_blobs": made["delta"]["requiredBlobs"],
            "required_bytes": made["delta"]["requiredBytes"],
            "inventory_bytes": inventory.stat().st_size,
            "inventory_seconds": round(seconds_inventory, 2),
            "full_export_seconds": round(seconds_full, 2),
            "delta_export_seconds": made["seconds"],
            "delta_import_seconds": imported["seconds"],
            "delta_import_waiting": imported["waiting"],
        }
    finally:
        site.stop()


def _volumes(work: Path, dtbundle: str, update: Update, key: list[str], pub: list[str], size: int) -> dict[str, Any]:
    target = start_registry(work / "vol-target")
    try:
        made = _run(
            [
                dtbundle,
                "export",
                "--plain-http",
                *key,
                "-o",
                str(work / "vol.tar.zst"),
                "--volume-size",
                str(size),
                "--json",
                *update.refs["1.1"],
            ]
        )
        paths = [w["bundle"] for w in made["written"]]
        order = list(paths)
        random.Random(7).shuffle(order)
        runs = []
        for path in order:
            done = _run([dtbundle, "import", "--plain-http", *pub, "--registry", f"{target.address}/v", path, "--json"])
            runs.append(
                {
                    "volume": Path(path).name,
                    "seconds": done["seconds"],
                    "missing_after": done["volumes"]["missing"],
                    "images_published": len(done["images"]),
                    "waiting": len(done["waiting"]),
                }
            )
        return {
            "volume_size": size,
            "volumes": [{"name": Path(w["bundle"]).name, "bytes": w["compressedBytes"]} for w in made["written"]],
            "largest_volume_bytes": max(w["compressedBytes"] for w in made["written"]),
            "imports_in_shuffled_order": runs,
        }
    finally:
        target.stop()


def _pipe(work: Path, dtbundle: str, update: Update, key: list[str], pub: list[str], rounds: int) -> dict[str, Any]:
    refs, plain = update.refs["1.1"], ["--plain-http"]
    times: dict[str, list[float]] = {"pipe": [], "file_then_import": [], "export_to_file": [], "import_file": []}
    for r in range(rounds):
        for tool in ("pipe", "file") if r % 2 == 0 else ("file", "pipe"):
            target = start_registry(work / f"pipe-{r}-{tool}")
            where = ["--registry", f"{target.address}/p"]
            try:
                if tool == "pipe":
                    seconds, _ = measured_pipeline(
                        [
                            [dtbundle, "export", *plain, *key, "-o", "-", "-q", *refs],
                            [dtbundle, "import", "-", *plain, *pub, *where, "-q"],
                        ],
                        child_env(),
                        quiet=True,
                    )
                    times["pipe"].append(seconds)
                else:
                    bundle = work / f"pipe-{r}.tar.zst"
                    exported, _ = measured(
                        [dtbundle, "export", *plain, *key, "-o", str(bundle), "-q", *refs], child_env(), quiet=True
                    )
                    imported, _ = measured(
                        [dtbundle, "import", str(bundle), *plain, *pub, *where, "-q"], child_env(), quiet=True
                    )
                    times["export_to_file"].append(exported)
                    times["import_file"].append(imported)
                    times["file_then_import"].append(exported + imported)
                    bundle.unlink()
            finally:
                target.stop()
    return {
        k: {"median_seconds": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
        for k, v in times.items()
    }


def mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def markdown(result: dict[str, Any]) -> str:
    d, v, p = result["delta"], result["volumes"], result["pipe"]
    lines = [
        f"## Issue 14: {result['images']} images x {result['platforms']} platforms, update 1.0 -> 1.1",
        "",
        "| bundle of 1.1 | bytes |",
        "|---|---|",
        f"| full | {mib(d['full_bundle_bytes'])} |",
        f"| delta (against an inventory of the site holding 1.0) | {mib(d['delta_bundle_bytes'])} |",
        f"| blobs that changed ({d['changed_blobs']}) | {mib(d['changed_blob_bytes'])} |",
        f"| left out, required at the target ({d['required_blobs']} blobs) | {mib(d['required_bytes'])} |",
        f"| the inventory file | {d['inventory_bytes']} B, taken in {d['inventory_seconds']} s |",
        "",
        f"Volumes of at most {mib(v['volume_size'])}: "
        + ", ".join(f"{x['name']} {mib(x['bytes'])}" for x in v["volumes"]),
        "",
        "| import, shuffled order | seconds | volumes still missing after | images published | waiting |",
        "|---|---|---|---|---|",
        *[
            f"| {x['volume']} | {x['seconds']} | {x['missing_after']} | {x['images_published']} | {x['waiting']} |"
            for x in v["imports_in_shuffled_order"]
        ],
        "",
        "| transfer of 1.1 into a fresh registry | median s | runs |",
        "|---|---|---|",
        *[f"| {k} | {x['median_seconds']} | {x['runs']} |" for k, x in p.items()],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - run through scripts/bench.py update
    sys.exit("run: scripts/bench.py update")
