"""Benchmarks on loopback registries (speed and memory are measured here, never in tests).

    .venv/bin/python scripts/bench.py suite [--sets 1.2gb,latency] [--rounds 5] [--latency-ms 40]
    .venv/bin/python scripts/bench.py download --size-mib 1024
    .venv/bin/python scripts/bench.py export --size-mib 1100
    .venv/bin/python scripts/bench.py import --size-mib 1100
    .venv/bin/python scripts/bench.py report [bench-results/suite.json]
    .venv/bin/python scripts/bench.py proxy 127.0.0.1:5000 --latency-ms 40
    .venv/bin/python scripts/bench.py update [--images 3] [--rounds 3] [--volume-mib 128]

``suite``: in one run, for each set (``1.2gb``: 5 cosign-signed images of 2-4 platforms,
1.2 GB; ``5gb``: the same with 5 GB; ``latency``: 12 small signed multi-arch images behind a
proxy that adds ``--latency-ms`` per request turn), ``dtbundle export`` and ``import``
against the skopeo pipeline (``skopeo copy --all`` per image + ``tar | zstd -T0 -3``; unpack +
``skopeo copy --all`` per image) and against the floor (minimal pull and push clients,
``benchlib/floor.py``), ``--rounds`` times in rotating order; prints medians, ratios and peak
RSS as markdown tables and writes bench-results/suite.json and suite.md. ``--small`` runs a
tiny version of each set (for tests). How each part works: benchlib/suite.py, proxy.py
(the latency model), floor.py, seed.py.
``download``: pushes one image with a single random layer of SIZE MiB to a local
docker-registry, then measures, in the same run and against the same registry:
dtbundle's blob download (stream, verify, atomic move), dtbundle's upload to a
second repository, and ``skopeo copy docker://... dir:...`` as the reference peer.
``export``: seeds three cosign-signed multi-arch images (3 platforms each, shared base
layer, random incompressible layers) and measures ``dtbundle export`` and ``dtbundle
verify`` against the manual chain: ``skopeo copy --all`` into an OCI directory, then
``tar | zstd -T0``.
``import``: the same images, exported once, then ``dtbundle import`` (and a second,
idempotent run) into one registry against unpacking the bundle and ``skopeo copy
--all oci:... docker://...`` into another.
``report``: the suite's markdown tables again, from its JSON.
``proxy``: the suite's delaying proxy in front of a registry, until interrupted.
``update`` (issue 14, benchlib/update.py): a synthetic update where only the top layers change:
the full and the delta bundle's sizes against the changed blobs' bytes, a volume set imported
one volume at a time in shuffled order, and ``export -o - | import -`` against export to a
file plus import (median of ``--rounds``); writes bench-results/update.json and update.md.
Each measured step runs in its own child process, so peak RSS is that step's own.
Results are printed and written to bench-results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib.single import cmd_download, cmd_export, cmd_fetch, cmd_import, cmd_push

ROOT = Path(__file__).resolve().parents[1]


def cmd_suite(args: argparse.Namespace) -> None:
    from benchlib.report import build, markdown
    from benchlib.seed import make_set
    from benchlib.suite import Options, run_suite

    specs = [make_set(key.strip(), args.small) for key in args.sets.split(",") if key.strip()]
    jobs = tuple(int(j) for j in args.floor_jobs.split(",") if j.strip())
    if not specs or args.rounds < 1 or not jobs or min(jobs) < 1 or args.latency_ms < 0:
        raise SystemExit("suite: --sets, --rounds >= 1, --floor-jobs >= 1 and --latency-ms >= 0 are needed")
    options = Options(
        args.rounds,
        args.latency_ms,
        jobs,
        args.floor_concurrency,
        not args.floor_compress_layers,
        (ROOT / "src", ROOT / "scripts" / "benchlib" / "floor.py"),
    )
    # kill PID: unwind, so that the registries started so far stop and the work directory goes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dtbundle = str(Path(sys.executable).with_name("dtbundle"))
    meta = {
        "command": " ".join(["scripts/bench.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.rounds,
        "latency_ms": args.latency_ms,
        "floor_jobs": list(jobs),
        "floor_concurrency": args.floor_concurrency,
        "floor_stores_compressed_layers": not args.floor_compress_layers,
        "small": args.small,
        "cpus": os.cpu_count(),
        "dtbundle": _output([dtbundle, "--version"]).split()[-1],
        "skopeo": _output(["skopeo", "--version"]).split()[-1],
        "commit": _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "unknown",
        # the working tree's src/ against that commit (other work in progress is measured too)
        "src_modified": subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "src"], capture_output=True, check=False
        ).returncode
        != 0,
    }
    with tempfile.TemporaryDirectory(prefix="dtbundle-bench-", dir=args.workdir) as tmp:
        raw = run_suite(specs, options, Path(tmp), dtbundle)
    report = build(raw, meta)
    text = markdown(report)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "suite.md").write_text(text)


def _output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cmd_report(args: argparse.Namespace) -> None:
    from benchlib.report import markdown

    print(markdown(json.loads(Path(args.json).read_text())), end="")


def cmd_proxy(args: argparse.Namespace) -> None:
    from benchlib.proxy import DelayProxy

    with DelayProxy(args.upstream, args.latency_ms) as proxy:
        print(f"{proxy.address} -> {args.upstream}, {args.latency_ms:g} ms per round trip; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    print(f"{proxy.connections} connections, {proxy.turns} request turns")


def cmd_update(args: argparse.Namespace) -> None:
    from benchlib.update import markdown, run_update

    dtbundle = str(Path(sys.executable).with_name("dtbundle"))
    with tempfile.TemporaryDirectory(prefix="dtbundle-bench-", dir=args.workdir) as tmp:
        result = run_update(Path(tmp), dtbundle, args.images, args.rounds, args.volume_mib)
    result["command"] = " ".join(["scripts/bench.py", *sys.argv[1:]])
    result["commit"] = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "unknown"
    text = markdown(result)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "update.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "update.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="blob download/upload throughput vs skopeo")
    d.add_argument("--size-mib", type=int, default=1024)
    d.add_argument("--workdir", default=None, help="where temporary data goes (default: system temp)")
    e = sub.add_parser("export", help="dtbundle export vs skopeo copy --all + tar | zstd -T0")
    e.add_argument("--size-mib", type=int, default=1100)
    e.add_argument("--workdir", default=None)
    i = sub.add_parser("import", help="dtbundle import vs skopeo copy --all from the unpacked layout")
    i.add_argument("--size-mib", type=int, default=1100)
    i.add_argument("--workdir", default=None)
    s = sub.add_parser("suite", help="dtbundle vs the skopeo pipeline vs the floor, every set, in one run")
    s.add_argument(
        "--sets", default="1.2gb,latency", help="comma-separated: 1.2gb, 5gb, latency (default: %(default)s)"
    )
    s.add_argument("--rounds", type=int, default=5, help="runs of each tool, in rotating order (default: 5)")
    s.add_argument("--latency-ms", type=float, default=40.0, help="round trip added per request turn (latency set)")
    s.add_argument(
        "--floor-jobs", default="1,2,8", help="floor import: uploads at a time, one run each (default: 1,2,8)"
    )
    s.add_argument("--floor-concurrency", type=int, default=8, help="floor export: parallel requests (default: 8)")
    s.add_argument(
        "--floor-compress-layers",
        action="store_true",
        help="the floor exporter compresses compressed layers again (default: stored, as dtbundle writes them)",
    )
    s.add_argument("--small", action="store_true", help="a tiny version of each set (a few images, KiB layers)")
    s.add_argument("--workdir", default=None, help="where temporary data goes (default: system temp)")
    s.add_argument("--out", default="bench-results", help="where suite.json and suite.md go")
    r = sub.add_parser("report", help="print the markdown tables of a suite.json again")
    r.add_argument("json", nargs="?", default="bench-results/suite.json")
    x = sub.add_parser("proxy", help="the suite's delaying proxy in front of a registry, until interrupted")
    x.add_argument("upstream", help="HOST:PORT of the registry")
    x.add_argument("--latency-ms", type=float, default=40.0)
    u = sub.add_parser("update", help="issue 14: delta bundle, volume set, pipe vs file")
    u.add_argument("--images", type=int, default=3, help="multi-arch images in the update (default: 3)")
    u.add_argument("--rounds", type=int, default=3, help="runs of the pipe and of file + import (default: 3)")
    u.add_argument("--volume-mib", type=int, default=128, help="--volume-size of the volume set, MiB (default: 128)")
    u.add_argument("--workdir", default=None)
    u.add_argument("--out", default="bench-results")
    for name in ("fetch", "push"):
        p = sub.add_parser(name)
        p.add_argument("ref")
        p.add_argument("digest")
        p.add_argument("size", type=int)
        p.add_argument("path")
    args = parser.parse_args()
    if args.command in ("fetch", "push"):  # the floor's one-blob clients name their file dest or src
        args.dest = args.src = args.path
    commands = {
        "download": cmd_download,
        "export": cmd_export,
        "import": cmd_import,
        "suite": cmd_suite,
        "proxy": cmd_proxy,
        "update": cmd_update,
        "report": cmd_report,
        "fetch": cmd_fetch,
        "push": cmd_push,
    }
    commands[args.command](args)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
