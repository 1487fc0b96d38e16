"""The single-run comparisons of bench.py: ``download``, ``export`` and ``import`` (one run each).

``download``: one random layer through dtbundle's download and upload and ``skopeo copy``;
``export`` and ``import``: three cosign-signed multi-arch images through dtbundle and the
skopeo chain. bench.py's docstring says more; ``suite`` (suite.py) is the repeated, rotating
comparison with the floor and the latency set.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib.common import MiB, bundle_content, measured, skopeo_copies, write_random
from dtbundle import oci
from dtbundle.oci import Descriptor, Platform
from dtbundle.oci.reference import Reference, parse_reference
from dtbundle.registry import RegistryClient, RegistryConfig
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer, start_registry

BENCH = Path(__file__).resolve().parents[1] / "bench.py"


def cmd_fetch(args: argparse.Namespace) -> None:
    desc = Descriptor(oci.OCI_LAYER_GZIP, args.digest, args.size)
    with RegistryClient(RegistryConfig(plain_http=True)) as client:
        client.fetch_blob(parse_reference(args.ref), desc, Path(args.dest))


def cmd_push(args: argparse.Namespace) -> None:
    desc = Descriptor(oci.OCI_LAYER_GZIP, args.digest, args.size)
    path = Path(args.src)
    with RegistryClient(RegistryConfig(plain_http=True)) as client:
        client.upload_blob(parse_reference(args.ref), desc, lambda: path.open("rb"))


def cmd_download(args: argparse.Namespace) -> None:
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="dtbundle-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        server = start_registry(work / "registry")
        try:
            layer_path = work / "layer.bin"
            digest = write_random(layer_path, size)
            layer = Descriptor(oci.OCI_LAYER_GZIP, digest, size)
            ref = Reference(server.address, "bench/big", "1")
            me = [sys.executable, str(BENCH)]
            up_s, up_rss = measured([*me, "push", str(ref), digest, str(size), str(layer_path)])
            # a manifest so that skopeo can copy the image
            config = images.Blob(
                oci.OCI_CONFIG,
                b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
            )
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": oci.OCI_MANIFEST,
                    "config": config.descriptor.to_json(),
                    "layers": [layer.to_json()],
                }
            ).encode()
            with RegistryClient(RegistryConfig(plain_http=True)) as client:
                client.upload_blob(ref, config.descriptor, lambda: io.BytesIO(config.data))
                client.put_manifest(ref, manifest, oci.OCI_MANIFEST)
            dl_s, dl_rss = measured([*me, "fetch", str(ref), digest, str(size), str(work / "out.bin")])
            (work / "out.bin").unlink()
            sk_s, sk_rss = measured(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    f"docker://{ref}",
                    f"dir:{work / 'skopeo-dir'}",
                ]
            )
        finally:
            server.stop()
    mb = size / 1e6
    rows = {
        "dtbundle download (verify sha256, atomic)": (dl_s, dl_rss),
        "skopeo copy docker:// -> dir:": (sk_s, sk_rss),
        "dtbundle upload (chunked PATCH)": (up_s, up_rss),
    }
    print(f"\nblob of {args.size_mib} MiB on loopback, docker-registry 2.8, {os.cpu_count()} cores")
    print(f"{'step':<44} {'wall s':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
    result = {}
    for name, (secs, rss) in rows.items():
        print(f"{name:<44} {secs:>8.2f} {mb / secs:>8.1f} {rss / 1024:>13.1f}")
        result[name] = {
            "seconds": round(secs, 3),
            "MBps": round(mb / secs, 1),
            "peak_rss_mib": round(rss / 1024, 1),
        }
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "download.json").write_text(json.dumps({"size_mib": args.size_mib, "results": result}, indent=2))


def _seed_large(client: RegistryClient, registry: str, work: Path, total_mib: int) -> list[Reference]:
    """Three multi-arch images (3 platforms each) sharing a base layer, about ``total_mib`` MiB
    of unique random (incompressible, like real gzip layers) content, all cosign-signed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    platforms = [Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "arm", "v7")]
    per_layer = max(1, (total_mib - 64) // 18) * MiB  # 9 platform images x 2 layers, plus the base

    def layer(name: str, size: int) -> Descriptor:
        path = work / name
        digest = write_random(path, size)
        desc = Descriptor(oci.OCI_LAYER_GZIP, digest, size)
        client.upload_blob(Reference(registry, "bench/base"), desc, lambda: path.open("rb"))
        return desc

    base = layer("base", 64 * MiB)
    refs = []
    for app in ("operator", "agent", "collector"):
        ref = Reference(registry, f"bench/{app}", "1.0")
        children = []
        for plat in platforms:
            layers = [base] + [layer(f"{app}-{plat.architecture}{plat.variant or ''}-{n}", per_layer) for n in range(2)]
            for desc in layers:
                client.upload_blob(
                    ref,
                    desc,
                    lambda d=desc: (work / "missing").open("rb"),  # type: ignore[misc]
                    mount_from="bench/base",
                )
            config = images.Blob(
                oci.OCI_CONFIG,
                json.dumps(
                    {
                        "architecture": plat.architecture,
                        "os": plat.os,
                        **({"variant": plat.variant} if plat.variant else {}),
                        "rootfs": {"type": "layers", "diff_ids": [d.digest for d in layers]},
                    }
                ).encode(),
            )
            manifest = images.BuiltManifest(
                oci.OCI_MANIFEST,
                json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": oci.OCI_MANIFEST,
                        "config": config.descriptor.to_json(),
                        "layers": [d.to_json() for d in layers],
                    }
                ).encode(),
                [config],
                platform=plat,
            )
            children.append(manifest)
        index = images.build_index(children)
        images.push(client, ref, index)
        for target in [index, *children]:
            sig = images.cosign_signature(ref.name, target.digest, key)
            images.push(client, ref.with_tag(oci.referrers_tag(target.digest) + ".sig"), sig)
        refs.append(ref)
    for path in work.iterdir():
        if path.is_file():
            path.unlink()
    return refs


def _prepare(work: Path, server: RegistryServer, size_mib: int) -> tuple[list[Reference], str]:
    """Seed ``server`` with the large sample images and create bundle keys in ``work/keys``."""
    (work / "seed").mkdir()
    with RegistryClient(RegistryConfig(plain_http=True)) as client:
        refs = _seed_large(client, server.address, work / "seed", size_mib)
    dtbundle = str(Path(sys.executable).with_name("dtbundle"))
    subprocess.run([dtbundle, "keygen", "--output-dir", str(work / "keys")], check=True, stdout=subprocess.DEVNULL)
    return refs, dtbundle


def cmd_export(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dtbundle-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        server = start_registry(work / "registry")
        try:
            refs, dtbundle = _prepare(work, server, args.size_mib)
            bundle = work / "bundle.tar.zst"
            ex_s, ex_rss = measured(
                [
                    dtbundle,
                    "export",
                    "--quiet",
                    "--plain-http",
                    "--signing-key",
                    str(work / "keys/dtbundle.key"),
                    "-o",
                    str(bundle),
                    *map(str, refs),
                ]
            )
            bundle_size = bundle.stat().st_size
            vf_s, vf_rss = measured(
                [dtbundle, "verify", "--quiet", "--public-key", str(work / "keys/dtbundle.pub"), str(bundle)]
            )
            # The manual chain: skopeo copy --all of each image into one OCI layout, then tar | zstd -T0.
            layout = work / "layout"
            sk_s, sk_rss = skopeo_copies(
                [(f"docker://{ref}", f"oci:{layout}:{ref}") for ref in refs], "--src-tls-verify=false"
            )
            tz_s, tz_rss = measured(
                ["sh", "-c", f"tar -C '{layout}' -cf - . | zstd -q -T0 -3 -o '{work}/manual.tar.zst'"]
            )
            layout_bytes = sum(p.stat().st_size for p in layout.rglob("*") if p.is_file())
            manual_size = (work / "manual.tar.zst").stat().st_size
            content_size = bundle_content(bundle)
        finally:
            server.stop()
    mb = content_size / 1e6
    print(
        f"\nexport of {len(refs)} multi-arch images (3 platforms each, cosign-signed), "
        f"{content_size / MiB:.0f} MiB of content, loopback docker-registry, {os.cpu_count()} cores"
    )
    print(f"{'step':<58} {'wall s':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
    rows = {
        "dtbundle export (images + 12 signatures, signed bundle)": (ex_s, ex_rss, mb),
        "dtbundle verify (signature + every sha256)": (vf_s, vf_rss, mb),
        "skopeo copy --all x3 -> OCI dir (images only, no sigs)": (sk_s, sk_rss, layout_bytes / 1e6),
        "tar | zstd -T0 -3 of that dir": (tz_s, tz_rss, layout_bytes / 1e6),
        "skopeo + tar|zstd total": (sk_s + tz_s, max(sk_rss, tz_rss), layout_bytes / 1e6),
    }
    result = {}
    for name, (secs, rss, size_mb) in rows.items():
        print(f"{name:<58} {secs:>8.2f} {size_mb / secs:>8.1f} {rss / 1024:>13.1f}")
        result[name] = {
            "seconds": round(secs, 3),
            "MBps": round(size_mb / secs, 1),
            "peak_rss_mib": round(rss / 1024, 1),
        }
    print(f"bundle {bundle_size / MiB:.1f} MiB; manual tar.zst {manual_size / MiB:.1f} MiB")
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "export.json").write_text(
        json.dumps(
            {
                "content_bytes": content_size,
                "bundle_bytes": bundle_size,
                "manual_bytes": manual_size,
                "results": result,
            },
            indent=2,
        )
    )


def cmd_import(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dtbundle-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        source = start_registry(work / "source")
        ours, theirs = start_registry(work / "target-dtbundle"), start_registry(work / "target-skopeo")
        try:
            refs, dtbundle = _prepare(work, source, args.size_mib)
            bundle = work / "bundle.tar.zst"
            subprocess.run(
                [
                    dtbundle,
                    "export",
                    "--quiet",
                    "--plain-http",
                    "--signing-key",
                    str(work / "keys/dtbundle.key"),
                    "-o",
                    str(bundle),
                    *map(str, refs),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            content = bundle_content(bundle)
            im_s, im_rss = measured(
                [
                    dtbundle,
                    "import",
                    "--quiet",
                    "--plain-http",
                    "--public-key",
                    str(work / "keys/dtbundle.pub"),
                    "--registry",
                    f"{ours.address}/mirror",
                    str(bundle),
                ]
            )
            re_s, re_rss = measured(
                [
                    dtbundle,
                    "import",
                    "--quiet",
                    "--plain-http",
                    "--public-key",
                    str(work / "keys/dtbundle.pub"),
                    "--registry",
                    f"{ours.address}/mirror",
                    str(bundle),
                ]
            )
            layout = work / "layout"
            layout.mkdir()
            un_s, un_rss = measured(["sh", "-c", f"zstd -dc '{bundle}' | tar -x -C '{layout}'"])
            pairs = [(f"oci:{layout}:{r}", f"docker://{theirs.address}/mirror/{r.repository}:{r.tag}") for r in refs]
            sk_s, sk_rss = skopeo_copies(pairs, "--dest-tls-verify=false")
        finally:
            for server in (source, ours, theirs):
                server.stop()
    mb = content / 1e6
    print(
        f"\nimport of {len(refs)} multi-arch images (3 platforms each, 12 cosign signatures), "
        f"{content / MiB:.0f} MiB of content, into a loopback docker-registry, {os.cpu_count()} cores"
    )
    print(f"{'step':<62} {'wall s':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
    rows = {
        "dtbundle import (verify + push images and signatures)": (im_s, im_rss),
        "dtbundle import again (verifies, pushes nothing)": (re_s, re_rss),
        "zstd -dc | tar -x (unpack for skopeo)": (un_s, un_rss),
        "skopeo copy --all x3 oci: -> docker:// (images only)": (sk_s, sk_rss),
        "unpack + skopeo total": (un_s + sk_s, max(un_rss, sk_rss)),
    }
    result = {}
    for name, (secs, rss) in rows.items():
        print(f"{name:<62} {secs:>8.2f} {mb / secs:>8.1f} {rss / 1024:>13.1f}")
        result[name] = {"seconds": round(secs, 3), "MBps": round(mb / secs, 1), "peak_rss_mib": round(rss / 1024, 1)}
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "import.json").write_text(json.dumps({"content_bytes": content, "results": result}, indent=2))
