"""Progress, --quiet, the free-space check and interruption: what a user sees while export, import
and verify work, and what an interrupted run leaves behind."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from dtbundle.bundle.format import Catalog
from dtbundle.bundle.key import load_private_key, load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.cli.progress import LineProgress, TerminalProgress
from dtbundle.errors import LocalIOError
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.run import ImportSettings, run_import
from dtbundle.oci import Platform
from dtbundle.oci.reference import Reference
from dtbundle.progress import format_bytes
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from dtbundle.verify import verify
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.interrupt import ThrottledProxy, Watched
from tests.support.registries import Exported, make_client

MiB = 1 << 20
LINE = re.compile(r"dtbundle: .+ \(\d+ s\)|dtbundle: .+: \d+% \(\S+ \S+ of \S+ \S+, \S+ \S+/s(, about .+ left)?\)")
EXPORT_INTERRUPTED = (
    "dtbundle: interrupted: no bundle was written and temporary files were removed; run the same command again"
)
IMPORT_INTERRUPTED = (
    "dtbundle: interrupted: no tag was changed; blobs already pushed are reused when you run the same command again"
)


class Recorder:
    """A Progress that records every call, and the thread each ``advance`` came from."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.totals: list[int] = []
        self.advanced: list[tuple[int, str]] = []
        self.order: list[str] = []
        self._lock = threading.Lock()

    def phase(self, text: str) -> None:
        self.phases.append(text)
        self.order.append("phase")

    def start(self, total_bytes: int) -> None:
        self.totals.append(total_bytes)
        self.order.append("start")

    def advance(self, n: int) -> None:
        with self._lock:
            self.advanced.append((n, threading.current_thread().name))
            if self.order[-1] != "advance":
                self.order.append("advance")

    @property
    def done(self) -> int:
        return sum(n for n, _ in self.advanced)


def _manifest_digests(catalog: Catalog) -> set[str]:
    platforms = {p.digest for i in catalog.images for p in i.platforms}
    return {i.digest for i in catalog.images} | platforms | {a.digest for a in catalog.artifacts}


def _bytes(figure: str) -> float:
    number, unit = figure.split()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(unit)


def test_export_reports_phases_and_counts_bytes_as_they_arrive(
    plain_registry: RegistryServer, seeded: list[images.SampleImage], keys_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    settings = ExportSettings(
        tuple(requests_from([str(i.ref) for i in seeded])),
        tmp_path / "p.tar.zst",
        load_private_key(keys_dir / "dtbundle.key"),
        concurrency=2,
    )
    with make_client(plain_registry, user=None) as client:
        summary = run_export(client, settings, recorder)
    with open_bundle(summary.path, None) as bundle:
        catalog = bundle.catalog
    manifests = _manifest_digests(catalog)
    blobs = [f for f in catalog.files if f.path.startswith("blobs/") and f.digest not in manifests]
    assert recorder.phases == [
        "resolving 5 images",
        f"writing the catalog and {len(manifests)} manifests",
        f"downloading {len(blobs)} blobs",
        "finishing p.tar.zst",
    ]
    assert recorder.totals == [sum(f.size for f in blobs)] == [recorder.done]
    # Counted while downloading (in the fetch threads), not when appended to the bundle.
    assert {thread.rsplit("_", 1)[0] for _, thread in recorder.advanced} == {"dtbundle-fetch"}
    assert recorder.order == ["phase", "phase", "phase", "start", "advance", "phase"]


def test_import_and_verify_report_phases_and_every_byte(exported: Exported, plain_registry: RegistryServer) -> None:
    keys = [load_public_key(exported.pub)]
    with open_bundle(exported.path, None) as bundle:
        total, files = bundle.catalog.total_size, len(bundle.catalog.files)
    recorder = Recorder()
    with make_client(plain_registry, user=None) as client:
        where = f"{plain_registry.address}/{uuid.uuid4().hex[:10]}"
        run_import(client, ImportSettings(exported.path, keys, RepositoryMapper(where)), recorder)
    assert recorder.phases[0].startswith("checking ") and recorder.phases[0].endswith(" target tags")
    assert recorder.phases[1:] == [f"verifying and pushing {files} files", "pushing manifests and tags"]
    assert recorder.totals == [total] == [recorder.done]

    recorder = Recorder()
    verify(exported.path, keys, None, progress=recorder)
    assert recorder.phases == [f"verifying {exported.path.name}"]
    assert recorder.totals == [total] == [recorder.done]


def test_line_progress_names_the_phase_percent_bytes_and_rate() -> None:
    now = [100.0]
    display = LineProgress(io.StringIO(), interval=3600, clock=lambda: now[0])
    try:
        display.phase("resolving 5 images")
        now[0] += 12
        assert display.line() == "dtbundle: resolving 5 images (12 s)"
        display.phase("downloading 40 blobs")
        display.start(2048 * MiB)
        now[0] += 4
        display.advance(768 * MiB)
        assert display.line() == (
            "dtbundle: downloading 40 blobs: 38% (768.0 MiB of 2.0 GiB, 192.0 MiB/s, about 7 s left)"
        )
    finally:
        display.close()

    stream = io.StringIO()
    display = LineProgress(stream, interval=0.02)
    display.phase("verifying b.tar.zst")
    deadline = time.monotonic() + 10
    while stream.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    display.close()
    printed = stream.getvalue()
    time.sleep(0.1)
    assert stream.getvalue() == printed  # nothing after close
    lines = printed.splitlines()
    assert len(lines) >= 2 and all(line.startswith("dtbundle: verifying b.tar.zst (") for line in lines)


def test_terminal_progress_prints_phase_lines_and_an_iec_bar() -> None:
    stream = io.StringIO()
    display = TerminalProgress(stream)
    display.phase("downloading 2 blobs")
    display.start(3 * MiB)
    display.advance(MiB + MiB // 2)
    bar = str(display._bar)
    display.close()
    assert stream.getvalue().startswith("dtbundle: downloading 2 blobs\n")
    assert " 50%|" in bar and "1.5 MiB of 3.0 MiB" in bar and "/s" in bar
    assert format_bytes(0) == "0 B" and format_bytes(1536) == "1.5 KiB" and format_bytes(5 << 30) == "5.0 GiB"


def test_progress_lines_without_a_terminal(
    plain_registry: RegistryServer, seeded: list[images.SampleImage], keys_dir: Path, tmp_path: Path
) -> None:
    args = ["export", "--plain-http", "--signing-key", str(keys_dir / "dtbundle.key"), str(seeded[0].ref)]
    proc = run_in_process(*args, "-o", str(tmp_path / "a.tar.zst"), env={"DTBUNDLE_PROGRESS_INTERVAL": "0.005"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(LINE.fullmatch(line) for line in lines), lines
    proc = run_in_process(*args, "-o", str(tmp_path / "b.tar.zst"), env={"DTBUNDLE_PROGRESS_INTERVAL": "0"})
    assert "DTBUNDLE_PROGRESS_INTERVAL" in assert_clean_error(proc, 2)


def test_quiet_prints_only_the_result_line(
    exported: Exported, plain_registry: RegistryServer, seeded: list[images.SampleImage], tmp_path: Path
) -> None:
    out = tmp_path / "q.tar.zst"
    export = ["export", "--plain-http", "--signing-key", str(exported.key), str(seeded[0].ref)]
    proc = run_in_process(*export, "-q", "-o", str(out), env={"DTBUNDLE_PROGRESS_INTERVAL": "0.001"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d+\.\d KiB, sha256 [0-9a-f]{{64}}\)\n", proc.stdout)
    proc = run_in_process(*export, "-q", "--json", "--force", "-o", str(out))
    assert proc.returncode == 0 and isinstance(json.loads(proc.stdout), dict)  # --json: unaffected by -q

    proc = run_in_process("verify", "-q", "--public-key", str(exported.pub), str(exported.path))
    assert proc.returncode == 0 and proc.stderr == ""
    files = len(verify(exported.path, [load_public_key(exported.pub)], None).bundle.catalog.files)
    assert proc.stdout == f"verified {exported.path}: {files} files, 5 images\n"

    where = f"{plain_registry.address}/{uuid.uuid4().hex[:10]}"
    imp = ["import", "-q", "--plain-http", "--public-key", str(exported.pub), "--registry", where, str(exported.path)]
    proc = run_in_process(*imp, "--dry-run")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert re.fullmatch(
        rf"dry run of {re.escape(str(exported.path))} into {where}: (\d+) tags \(\1 would change, 0 unchanged\), "
        r"\S+ \S+ would be uploaded; nothing was written\n",
        proc.stdout,
    ), proc.stdout
    proc = run_in_process(*imp)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert re.fullmatch(
        rf"imported {re.escape(str(exported.path))} into {where}: (\d+) tags \(\1 new or replaced, 0 unchanged\), "
        r"\S+ \S+ uploaded\n",
        proc.stdout,
    ), proc.stdout


def test_export_refuses_without_the_space_it_may_need(
    plain_registry: RegistryServer,
    seeded: list[images.SampleImage],
    keys_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    asked: list[Path] = []

    def disk_usage(path: Path) -> shutil._ntuple_diskusage:
        asked.append(Path(path))
        return shutil._ntuple_diskusage(100 * MiB, 99 * MiB, MiB)

    monkeypatch.setattr("dtbundle.export.write.shutil.disk_usage", disk_usage)
    refs = [str(i.ref) for i in seeded]
    key = str(keys_dir / "dtbundle.key")
    line = assert_clean_error(
        run_in_process("export", "--plain-http", "--signing-key", key, "-o", str(out / "b.tar.zst"), *refs), 1
    )
    assert asked == [out] and list(out.iterdir()) == []  # refused before anything was written
    found = re.fullmatch(
        r"dtbundle: error: needs up to (\S+ \S+) in (.+) \(bundle (\S+ \S+) \+ temporary files (\S+ \S+)\), "
        r"1\.0 MiB free: free space or write elsewhere with --output",
        line,
    )
    assert found is not None, line
    needed, where, bundle_room, spool_room = found.groups()
    assert where == str(out)

    monkeypatch.undo()
    with make_client(plain_registry, user=None) as client:
        settings = ExportSettings(
            tuple(requests_from(refs)), out / "b.tar.zst", load_private_key(keys_dir / "dtbundle.key")
        )
        summary = run_export(client, settings)
    with open_bundle(summary.path, None) as bundle:
        catalog = bundle.catalog
    manifests = _manifest_digests(catalog)
    largest = max(f.size for f in catalog.files if f.digest not in manifests and f.path.startswith("blobs/"))
    assert _bytes(bundle_room) >= _bytes(format_bytes(max(summary.compressed_bytes, catalog.total_size)))
    assert _bytes(spool_room) >= _bytes(format_bytes(largest))
    assert abs(_bytes(needed) - _bytes(bundle_room) - _bytes(spool_room)) <= 0.1 * _bytes(needed)

    with make_client(plain_registry, user=None) as client, pytest.raises(LocalIOError):
        monkeypatch.setattr("dtbundle.export.write.shutil.disk_usage", disk_usage)
        run_export(client, ExportSettings(settings.requests, out / "c.tar.zst", settings.signing_key))


@pytest.fixture(scope="module")
def slow_image(plain_registry: RegistryServer) -> Reference:
    """An image with one 6 MiB layer: seconds of transfer through a ThrottledProxy of 2 MiB/s."""
    ref = Reference(plain_registry.address, f"slow/{uuid.uuid4().hex[:8]}", "1.0")
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer("slow", 6 * MiB)])
    with make_client(plain_registry, user=None) as client:
        images.push(client, ref, built)
    return ref


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_export_says_so_and_leaves_nothing(
    plain_registry: RegistryServer, slow_image: Reference, keys_dir: Path, tmp_path: Path, number: signal.Signals
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with ThrottledProxy(plain_registry.address, 2 * MiB) as proxy:
        export = Watched(
            "export",
            "--plain-http",
            "--signing-key",
            str(keys_dir / "dtbundle.key"),
            "-o",
            str(out / "slow.tar.zst"),
            f"{proxy.address}/{slow_image.repository}:{slow_image.tag}",
            env={"DTBUNDLE_PROGRESS_INTERVAL": "0.1"},
        )
        export.wait_for(lambda line: line.startswith("dtbundle: downloading 2 blobs: "))
        # The bundle and the spool exist (the layer may stream straight into the bundle: its turn)
        assert list(out.glob(".slow.tar.zst.*.partial")) and list(out.glob(".slow.tar.zst.*.spool"))
        code, lines = export.interrupt(number)
    assert code == 130, lines
    assert lines[-1] == EXPORT_INTERRUPTED and all(LINE.fullmatch(line) for line in lines[:-1]), lines
    assert list(out.iterdir()) == []


def test_interrupted_import_moves_no_tag(
    plain_registry: RegistryServer, slow_image: Reference, keys_dir: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "slow.tar.zst"
    path = uuid.uuid4().hex[:10]
    target = Reference(plain_registry.address, f"{path}/{slow_image.repository}", slow_image.tag)
    with make_client(plain_registry, user=None) as client:
        key = load_private_key(keys_dir / "dtbundle.key")
        run_export(client, ExportSettings(tuple(requests_from([str(slow_image)])), bundle, key))
        before = images.push(
            client, target, images.build_image(Platform("linux", "amd64"), [images.make_layer("other", 64)])
        )
    with ThrottledProxy(plain_registry.address, 2 * MiB) as proxy:
        imported = Watched(
            "import",
            "--plain-http",
            "--overwrite",
            "--public-key",
            str(keys_dir / "dtbundle.pub"),
            "--registry",
            f"{proxy.address}/{path}",
            str(bundle),
            env={"DTBUNDLE_PROGRESS_INTERVAL": "0.1"},
        )
        imported.wait_for(lambda line: line.startswith("dtbundle: verifying and pushing "))
        code, lines = imported.interrupt(signal.SIGINT)
    assert code == 130, lines
    assert lines[-1] == IMPORT_INTERRUPTED and all(LINE.fullmatch(line) for line in lines[:-1]), lines
    with make_client(plain_registry, user=None) as client:
        assert client.get_manifest(target).digest == before
