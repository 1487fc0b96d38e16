"""A bundle as a stream (issue 14): ``export -o -`` writes it to stdout, ``import -`` and ``verify -``
read it from stdin, with the file's guarantees: ``export -o - | import -`` copies every image with its
signatures, byte for byte; a stream cut anywhere exits 3 and tags nothing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import zstandard

from dtbundle.bundle.reader import open_bundle
from dtbundle.bundle.writer import remove_dead_leftovers
from dtbundle.bundle.zstdframes import FrameWatch
from dtbundle.errors import IntegrityError, UsageError
from dtbundle.oci.reference import Reference
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.cli import assert_clean_error, cli_env
from tests.support.registries import Exported, make_client

TIMEOUT = 60


def dtbundle(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtbundle", *args]


def run_with_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(dtbundle(*args), input=data, capture_output=True, timeout=TIMEOUT, env=cli_env(), check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def test_export_piped_into_import_copies_every_image_and_signature(
    plain_registry: RegistryServer, exported: Exported, tmp_path: Path
) -> None:
    where = f"{plain_registry.address}/pipe-{uuid.uuid4().hex[:8]}"
    refs = [str(i.ref) for i in exported.images]
    export = subprocess.Popen(
        dtbundle("export", "--plain-http", "--signing-key", str(exported.key), "-o", "-", "--quiet", *refs),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert export.stdout is not None
    imported = subprocess.run(
        dtbundle("import", "-", "--plain-http", "--public-key", str(exported.pub), "--registry", where, "--json"),
        stdin=export.stdout,
        capture_output=True,
        timeout=TIMEOUT,
        env=cli_env(),
        check=False,
    )
    export.stdout.close()
    assert export.wait(TIMEOUT) == 0, export.stderr.read().decode() if export.stderr else ""
    assert imported.returncode == 0, imported.stderr.decode()
    assert export.stderr is not None and "wrote the bundle to standard output" in export.stderr.read().decode()
    with make_client(plain_registry, user=None) as client:
        for image in exported.images:
            target = Reference(
                plain_registry.address, f"{where.split('/', 1)[1]}/{image.ref.repository}", image.ref.tag
            )
            there = client.head_manifest(target)
            assert there is not None and there.digest == image.digest  # byte for byte: the same digest
            if image.signed:  # the cosign signature came along
                assert client.head_manifest(target.with_tag(f"sha256-{image.digest[7:]}.sig")) is not None


def test_verify_reads_a_bundle_from_stdin(exported: Exported) -> None:
    proc = run_with_stdin(exported.path.read_bytes(), "verify", "--public-key", str(exported.pub), "-")
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("keep", [0.5, 0.999, -3, -1])
def test_a_truncated_stream_exits_3_and_tags_nothing(
    plain_registry: RegistryServer, exported: Exported, keep: float
) -> None:
    """Cut inside a blob, near the end, inside the last frame's checksum, one byte short."""
    data = exported.path.read_bytes()
    cut = data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep]
    where = f"{plain_registry.address}/cut-{uuid.uuid4().hex[:8]}"
    proc = run_with_stdin(cut, "import", "-", "--plain-http", "--public-key", str(exported.pub), "--registry", where)
    error = assert_clean_error(proc, 3)
    assert "truncated" in error or "missing" in error or "zstd" in error, error
    with make_client(plain_registry, user=None) as client:
        for image in exported.images:
            target = Reference(
                plain_registry.address, f"{where.split('/', 1)[1]}/{image.ref.repository}", image.ref.tag
            )
            assert client.head_manifest(target) is None
    assert_clean_error(run_with_stdin(cut, "verify", "--public-key", str(exported.pub), "-"), 3)


def test_data_after_the_last_frame_of_a_stream_is_refused(exported: Exported) -> None:
    data = exported.path.read_bytes() + b"\x00" * 7
    error = assert_clean_error(run_with_stdin(data, "verify", "--public-key", str(exported.pub), "-"), 3)
    assert "after its last zstd frame" in error


def test_stdin_goes_alone_and_volume_options_need_a_file(exported: Exported) -> None:
    proc = run_with_stdin(b"", "verify", "--public-key", str(exported.pub), "-", str(exported.path))
    assert "standard input" in assert_clean_error(proc, 2)
    proc = run_with_stdin(
        b"", "export", "--signing-key", str(exported.key), "-o", "-", "--volume-size", "4GiB", "x/y:1"
    )
    assert "--volume-size" in assert_clean_error(proc, 2)
    empty = run_with_stdin(b"", "verify", "--public-key", str(exported.pub), "-")
    assert_clean_error(empty, 3)


def test_export_to_standard_output_refuses_a_terminal(exported: Exported) -> None:
    """A binary bundle is never written to a terminal: pipe or redirect it."""
    controller, terminal = os.openpty()
    try:
        proc = subprocess.run(
            dtbundle("export", "--signing-key", str(exported.key), "-o", "-", "127.0.0.1:1/x/y:1"),
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
            env=cli_env(),
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 2 and "terminal" in proc.stderr.decode()


def test_emit_dynakube_needs_a_bundle_file(exported: Exported, tmp_path: Path) -> None:
    proc = run_with_stdin(b"", "import", "-", "--public-key", str(exported.pub), "--registry", "reg.example/m",
                          "--emit-dynakube", str(tmp_path / "dk.yaml"))  # fmt: skip
    assert "--emit-dynakube" in assert_clean_error(proc, 2)


def test_very_compressible_content_on_a_pipe_is_not_taken_for_a_block_bomb() -> None:
    """256 MiB of zeros compress to a few blocks per read of the pipe: thousands of blocks that each
    stand for 128 KiB. The budget is checked once the decompressor handed out what it read."""
    raw = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as writer:
        for _ in range(256):
            writer.write(bytes(1 << 20))
    consumed = [0]
    watch = FrameWatch(io.BytesIO(raw.getvalue()), lambda position: (consumed[0] + position) // 1024 + 1024)
    reader = zstandard.ZstdDecompressor().stream_reader(watch, read_across_frames=True)  # type: ignore[arg-type]
    while chunk := reader.read(1 << 20):
        consumed[0] += len(chunk)
    watch.finish()
    assert consumed[0] == 256 << 20


def test_a_pipe_of_empty_blocks_is_refused_early() -> None:
    """A frame of a million empty raw blocks explains no content: refused after one read's worth."""
    empty_block, last_block = b"\x00\x00\x00", b"\x01\x00\x00"
    frame = (0xFD2FB528).to_bytes(4, "little") + bytes([0x00, 0x38]) + empty_block * 1_000_000 + last_block
    consumed = [0]
    watch = FrameWatch(io.BytesIO(frame), lambda position: (consumed[0] + position) // 1024 + 1024)
    reader = zstandard.ZstdDecompressor().stream_reader(watch, read_across_frames=True)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="far more frames and blocks"):
        while chunk := reader.read(1 << 20):
            consumed[0] += len(chunk)
        watch.finish()
    assert watch.position < 1 << 20  # stopped long before the end of the input


def test_a_failed_export_to_stdout_keeps_its_json_error_off_stdout(exported: Exported) -> None:
    """Refused by the option parser (before the command runs) or by the command itself: either way the
    error document goes to stderr, since stdout carries only the bundle."""
    for args in (
        ("-o", "-", "--frob"),
        ("-qo", "-", "--volume-size", "huge"),
        ("-qo", "-", "--frob"),
        ("-qo-", "--frob"),
    ):
        proc = subprocess.run(
            dtbundle("export", "--signing-key", str(exported.key), "--json", *args, "127.0.0.1:1/x:1"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            env=cli_env(),
            check=False,
        )
        assert proc.returncode == 2 and proc.stdout == b"", args
        assert '"error"' in proc.stderr.decode(), args


def test_import_from_stdin_refuses_a_password_on_stdin(exported: Exported) -> None:
    proc = run_with_stdin(b"secret\n", "import", "-", "--public-key", str(exported.pub), "--registry", "reg.example/m",
                          "--username", "u", "--password-stdin")  # fmt: skip
    assert "--password-stdin" in assert_clean_error(proc, 2)


def test_a_fifo_neither_blocks_the_sweep_of_leftovers_nor_the_reader(tmp_path: Path) -> None:
    """Another user's FIFO named like a leftover (or given as a bundle) is skipped or refused, never opened
    for reading, which would wait for a writer forever."""
    fifo = tmp_path / ".dt.tar.zst.x.partial"
    os.mkfifo(fifo)
    assert remove_dead_leftovers(tmp_path / "dt.tar.zst") == 0 and fifo.exists()
    with pytest.raises(UsageError, match="not a regular file"):
        open_bundle(fifo, None)
