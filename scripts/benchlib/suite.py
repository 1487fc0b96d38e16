"""``bench.py suite``: dtbundle against the skopeo pipeline and the floor, every set, in one run.

For each set: a source registry is seeded (``seed.py``); then, ``rounds`` times, each export
tool runs once, round ``r`` starting at tool ``r mod n`` (so no tool always runs first, on a
cold cache, or last); then the same for the import tools. Every import run gets a fresh
target registry (a new port and an empty storage), so every run really pushes, no tool
inherits another's blobs, and skopeo's blob-info cache (keyed by registry address) offers it
nothing to mount. In the latency set, a :class:`~benchlib.proxy.DelayProxy` sits in front of
the source and of every target registry and every tool talks to it (plain HTTP).

Export tools: ``dtbundle export``; ``skopeo copy --all`` per image into one OCI directory, then
``tar | zstd -T0 -3``; the floor exporter. Import tools: ``dtbundle import`` of the last
dtbundle bundle; ``zstd -d | tar -x`` of the last skopeo archive, then ``skopeo copy --all``
per image; the floor importer of the dtbundle bundle, for each ``--floor-jobs`` value.
Each step runs in its own process; peak RSS is its own VmHWM (a pipeline's: the sum).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchlib.common import child_env, measured, measured_pipeline, skopeo_copies
from benchlib.floor import ACCEPT, digest_of, read_catalog
from benchlib.proxy import DelayProxy
from benchlib.seed import SetSpec, seed_set
from dtbundle.sandbox.registry_server import RegistryServer, start_registry

FLOOR = Path(__file__).resolve().with_name("floor.py")
PREFIX = "mirror"


@dataclass
class Options:
    rounds: int = 5
    latency_ms: float = 40.0
    floor_jobs: tuple[int, ...] = (1, 2, 8)
    floor_concurrency: int = 8
    floor_store: bool = True  # the floor exporter stores compressed layers (False: compresses them again)
    code: tuple[Path, ...] = ()  # what is measured (dtbundle's src/, the floor): fingerprinted before every run


@dataclass
class Run:
    round: int
    seconds: float
    rss_kib: int
    parts: dict[str, float] = field(default_factory=dict)
    turns: int | None = None  # request turns through the delaying proxy (latency set)
    connections: int | None = None  # connections through it
    load1: float = 0.0  # the machine's 1-minute load average when the run started (others' work too)
    src: str = ""  # fingerprint of the measured code when the run started (it may change under us)


def rotated(names: list[str], round_: int) -> list[str]:
    k = round_ % len(names)
    return names[k:] + names[:k]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class SetBench:
    """One set: its source registry, its exports and imports, ``rounds`` times each."""

    used_addresses: set[str] = set()  # every target address handed out in this process

    def __init__(self, spec: SetSpec, options: Options, work: Path, keys: Path, dtbundle: str) -> None:
        self.spec, self.options, self.work, self.keys, self.dtbundle = spec, options, work, keys, dtbundle
        self.delay = options.latency_ms if spec.latency else 0.0
        self.env = child_env()
        self.images: list[tuple[str, str, str]] = []  # (repository, tag, digest)
        self.source = ""
        self.source_proxy: DelayProxy | None = None
        self.targets = 0

    # -- the whole set ------------------------------------------------------------------------------
    def run(self) -> dict[str, object]:
        registry = start_registry(self.work / "source")
        proxy = None
        try:
            log(f"[{self.spec.key}] seeding {self.spec.content_bytes / 1e6:.0f} MB")
            self.images = seed_set(self.spec, registry.address, self.work / "seed")
            proxy = DelayProxy(registry.address, self.delay).start() if self.delay else None
            self.source, self.source_proxy = (proxy.address if proxy else registry.address), proxy
            exporters = {"dtbundle": self.export_dtbundle, "skopeo": self.export_skopeo, "floor": self.export_floor}
            exports = self.rounds("export", {name: self.counted(f) for name, f in exporters.items()})
            catalog = read_catalog(self.work / "bundle.tar.zst")
            importers: dict[str, Callable[[str], Run]] = {
                "dtbundle": self.import_dtbundle,
                "skopeo": self.import_skopeo,
            }
            for jobs in self.options.floor_jobs:
                importers[f"floor-j{jobs}"] = lambda target, j=jobs: self.import_floor(target, j)  # type: ignore[misc]
            imports = self.rounds("import", {n: self.fresh_target(n, f) for n, f in importers.items()})
        finally:
            if proxy is not None:
                proxy.stop()
            registry.stop()
        return {
            "key": self.spec.key,
            "title": self.spec.title.format(latency=f"{self.delay:g}"),
            "latency_ms": self.delay,
            "images": len(self.images),
            "platforms": sum(self.spec.platforms),
            "artifacts": len(catalog["artifacts"]),
            "files": len(catalog["files"]),
            "content_bytes": catalog["totalSize"],
            "bundle_bytes": (self.work / "bundle.tar.zst").stat().st_size,
            "targets": {"export": self.spec.targets[0], "import": self.spec.targets[1]} if self.spec.targets else None,
            "export": exports,
            "import": imports,
        }

    def rounds(self, phase: str, tools: dict[str, Callable[[int], Run]]) -> dict[str, list[Run]]:
        runs: dict[str, list[Run]] = {name: [] for name in tools}
        for r in range(self.options.rounds):
            for name in rotated(list(tools), r):
                load1, src = os.getloadavg()[0], source_fingerprint(self.options.code)
                run = tools[name](r)
                run.load1, run.src = round(load1, 2), src
                runs[name].append(run)
                turns = f", {run.turns} request turns on {run.connections} connections" if run.turns else ""
                log(
                    f"[{self.spec.key}] {phase} round {r + 1}/{self.options.rounds}: {name} {run.seconds:.2f} s, "
                    f"{run.rss_kib / 1024:.0f} MiB{turns}"
                )
        return runs

    def counted(self, exporter: Callable[[int], Run]) -> Callable[[int], Run]:
        """``exporter``, with the request turns and connections it made through the source proxy."""

        def run(r: int) -> Run:
            proxy = self.source_proxy
            before = (proxy.turns, proxy.connections) if proxy else (0, 0)
            result = exporter(r)
            if proxy:
                result.turns, result.connections = proxy.turns - before[0], proxy.connections - before[1]
            return result

        return run

    # -- export -------------------------------------------------------------------------------------
    def export_dtbundle(self, r: int) -> Run:
        out = self.work / "bundle.tar.zst"
        for path in (out, out.with_name(out.name + ".sha256")):
            path.unlink(missing_ok=True)
        refs = [f"{self.source}/{repo}:{tag}" for repo, tag, _ in self.images]
        cmd = [self.dtbundle, "export", "--quiet", "--plain-http", "--signing-key", str(self.keys / "dtbundle.key")]
        return Run(r, *measured([*cmd, "-o", str(out), *refs], self.env, quiet=True))

    def export_skopeo(self, r: int) -> Run:
        layout, out = self.work / "skopeo-layout", self.work / "skopeo.tar.zst"
        shutil.rmtree(layout, ignore_errors=True)
        out.unlink(missing_ok=True)
        pairs = [(f"docker://{self.source}/{repo}:{tag}", f"oci:{layout}:{repo}:{tag}") for repo, tag, _ in self.images]
        copy_s, copy_rss = skopeo_copies(pairs, "--src-tls-verify=false", self.env)
        pack_s, pack_rss = measured_pipeline(
            [["tar", "-C", str(layout), "-cf", "-", "."], ["zstd", "-q", "-T0", "-3", "-o", str(out)]], self.env
        )
        parts = {"skopeo copy": copy_s, "tar | zstd": pack_s}
        return Run(r, copy_s + pack_s, max(copy_rss, pack_rss), parts)

    def export_floor(self, r: int) -> Run:
        out = self.work / "floor.tar.zst"
        refs = [f"{repo}:{tag}" for repo, tag, _ in self.images]
        cmd = [sys.executable, str(FLOOR), "export", f"http://{self.source}", str(out), *refs]
        cmd += ["--concurrency", str(self.options.floor_concurrency)]
        return Run(r, *measured(cmd + ([] if self.options.floor_store else ["--compress-all"]), self.env))

    # -- import -------------------------------------------------------------------------------------
    def import_dtbundle(self, target: str) -> Run:
        state = self.work / f"state-{self.targets}.json"
        cmd = [self.dtbundle, "import", "--quiet", "--plain-http", "--public-key", str(self.keys / "dtbundle.pub")]
        cmd += ["--registry", f"{target}/{PREFIX}", "--state-file", str(state), str(self.work / "bundle.tar.zst")]
        return Run(0, *measured(cmd, self.env, quiet=True))

    def import_skopeo(self, target: str) -> Run:
        layout = self.work / "skopeo-unpacked"
        shutil.rmtree(layout, ignore_errors=True)
        layout.mkdir()
        unpack_s, unpack_rss = measured_pipeline(
            [["zstd", "-q", "-dc", str(self.work / "skopeo.tar.zst")], ["tar", "-x", "-C", str(layout)]], self.env
        )
        pairs = [
            (f"oci:{layout}:{repo}:{tag}", f"docker://{target}/{PREFIX}/{repo}:{tag}") for repo, tag, _ in self.images
        ]
        copy_s, copy_rss = skopeo_copies(pairs, "--dest-tls-verify=false", self.env)
        parts = {"zstd -d | tar -x": unpack_s, "skopeo copy": copy_s}
        return Run(0, unpack_s + copy_s, max(unpack_rss, copy_rss), parts)

    def import_floor(self, target: str, jobs: int) -> Run:
        cmd = [sys.executable, str(FLOOR), "import", f"http://{target}", str(self.work / "bundle.tar.zst"), PREFIX]
        return Run(0, *measured([*cmd, "--jobs", str(jobs), "--spool-dir", str(self.work)], self.env))

    def fresh_target(self, tool: str, importer: Callable[[str], Run]) -> Callable[[int], Run]:
        """``importer`` run against a new, empty target registry (behind its own proxy in the latency set)."""

        def run(r: int) -> Run:
            self.targets += 1
            where = self.work / f"target-{self.targets}"
            registry, proxy = self._start_target(where)
            try:
                result = importer(proxy.address if proxy else registry.address)
                if proxy:
                    result.turns, result.connections = proxy.turns, proxy.connections
                self._check_target(registry, signatures=tool != "skopeo")
            finally:
                if proxy is not None:
                    proxy.stop()
                registry.stop()
                shutil.rmtree(where, ignore_errors=True)
            result.round = r
            return result

        return run

    def _start_target(self, where: Path) -> tuple[RegistryServer, DelayProxy | None]:
        for _ in range(5):
            registry = start_registry(where)
            proxy = DelayProxy(registry.address, self.delay).start() if self.delay else None
            address = proxy.address if proxy else registry.address
            if address not in self.used_addresses:
                self.used_addresses.add(address)
                return registry, proxy
            if proxy is not None:
                proxy.stop()
            registry.stop()
        raise SystemExit("no fresh target address after 5 attempts")

    def _check_target(self, registry: RegistryServer, signatures: bool) -> None:
        """Every image arrived with its digest (and, where carried, its index signature)."""
        with httpx.Client(base_url=registry.url, trust_env=False, timeout=30) as client:
            for repo, tag, digest in self.images:
                wanted: list[tuple[str, str | None]] = [(tag, digest)]
                if signatures:
                    wanted.append(("sha256-" + digest.removeprefix("sha256:") + ".sig", None))
                for reference, expected in wanted:
                    response = client.get(f"/v2/{PREFIX}/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
                    if response.status_code != 200 or (expected and digest_of(response.content) != expected):
                        raise SystemExit(f"import check: {PREFIX}/{repo}:{reference} missing or wrong in the target")


def source_fingerprint(roots: tuple[Path, ...]) -> str:
    """A short digest of the .py files at or under ``roots`` (names and contents): equal for equal code."""
    if not roots:
        return ""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            with contextlib.suppress(OSError):
                digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def run_suite(specs: list[SetSpec], options: Options, work: Path, dtbundle: str) -> dict[str, object]:
    import subprocess

    keys = work / "keys"
    subprocess.run([dtbundle, "keygen", "--output-dir", str(keys)], check=True, stdout=subprocess.DEVNULL)
    results: dict[str, object] = {}
    for spec in specs:
        set_work = work / spec.key
        set_work.mkdir()
        try:
            results[spec.key] = SetBench(spec, options, set_work, keys, dtbundle).run()
        finally:
            shutil.rmtree(set_work, ignore_errors=True)
    return results
